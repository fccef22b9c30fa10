"""The prompts folder: wording catalog, line settings, prompt ids, speech."""
