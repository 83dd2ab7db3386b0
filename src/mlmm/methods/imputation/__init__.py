"""Methods of the imputation family."""
