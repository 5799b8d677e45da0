"""The package's version, in one place (``te.__version__``; setup.cfg reads it; what changed: CHANGELOG.md).
A module of its own, importing nothing, so that any layer can name the version without importing the
package's ``__init__``."""
__version__ = "0.1.0"
