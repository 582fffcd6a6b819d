"""Where and how to connect: one host block per transfer module, built from a Host row."""
