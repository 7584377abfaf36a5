"""`modelrepo rollout`: a new version of a model served beside the current one, stepped up on live
metrics, promoted or rolled back by itself (README "Roll out a new version")."""
