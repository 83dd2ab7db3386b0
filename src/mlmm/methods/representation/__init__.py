"""Methods of the representation family."""
