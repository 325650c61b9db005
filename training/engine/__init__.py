"""Training machinery shared by every stage: distributed setup, checkpoints, the loop."""
