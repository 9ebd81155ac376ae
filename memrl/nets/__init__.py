"""Networks: MLPs, tanh-Gaussian policy, twin Q, V, and (in dynamics) ensembles."""
