"""Ray Serve application: the Ensemble (ingress) and Risk deployments behind POST /v1/decide."""
