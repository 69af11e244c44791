"""The LLM layer: one async engine (`builders.llm.engine`) over registered providers
(`builders.llm.registry`), with a persistent response cache (`builders.llm.cache`).

Nothing is imported here, so loading the registry does not load the engine."""
