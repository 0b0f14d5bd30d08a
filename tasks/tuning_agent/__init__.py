"""tuning-agent: hyperparameter search over short SFT trials; promotion."""
