"""One-off studies: each measures one question once and records its answer in perf/results/.
Nothing here is part of what `modelrepo` runs; the product's tools live in perf/ itself."""
