"""Configuration: the top-level settings' types (`schema`), the one builder that turns a config into an
object (`builder`), the asset paths and the authors' modes."""
