"""Reference baselines: classical scikit-learn models, fitted without gradients, predicting in torch."""
