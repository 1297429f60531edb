"""How an estimate was obtained, recorded per layer call in the results."""
EXACT = "exact"                # exact algebra (affine maps, reshapes, merges of independent inputs)
CLOSED_FORM = "closed_form"    # closed-form Gaussian integral from the moment engine
QUADRATURE = "quadrature"      # high-precision numerical integration
MONTE_CARLO = "monte_carlo"    # sampling through the real layer or a clone of it
PROBE = "probe"                # unknown layer: real layer run on Gaussian samples
PASS_THROUGH = "pass_through"  # statistics passed on unchanged (no way to do better)
MEASURED = "measured"          # measured on a batch through kept (pretrained) layers

METHODS = (EXACT, CLOSED_FORM, QUADRATURE, MONTE_CARLO, PROBE, PASS_THROUGH, MEASURED)
