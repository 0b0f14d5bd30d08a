"""lift-sys: prompts, teacher IRs, review, negatives; its IR and templates."""
