"""The graph walk: loading a model, its graph of layer calls, the walk and the shared-layer
fixed point, weight drawing and writing, probes and Monte Carlo, the per-call results."""
