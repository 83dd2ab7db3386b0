"""Methods of the architecture family."""
