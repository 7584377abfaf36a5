"""Offline build steps that produce the repository's artifacts (imported as modelrepo.build)."""
