"""Training stages: each turns data into one model the product uses."""
