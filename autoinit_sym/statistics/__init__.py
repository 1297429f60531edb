"""Per-tensor statistics and their Gaussian algebra (no Keras): the record the walk keeps
for every tensor and what elementwise maps, sums, borders and lags do to it."""
