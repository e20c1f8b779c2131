"""The whole pipeline on one machine (`make run`)."""
