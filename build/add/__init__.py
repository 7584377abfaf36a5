"""`modelrepo add` / `modelrepo remove`: a team's own model from a file to a served, checked Triton model."""
