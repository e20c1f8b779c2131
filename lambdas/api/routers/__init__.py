"""One router per area; each is built from the environment's dependencies."""
