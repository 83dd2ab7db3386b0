"""Methods of the combination family."""
