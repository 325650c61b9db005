"""Networks used only for training (the discriminator); the product's networks live in gramcast."""
