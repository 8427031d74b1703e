"""The library versions a replacement of a library's internals was written against, checked before it is installed."""
import logging
from dataclasses import dataclass
from importlib import metadata

from packaging.specifiers import SpecifierSet
from packaging.version import Version

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WrittenFor:
    """A distribution and the range of its versions whose internals a replacement relies on."""

    distribution: str
    versions: str

    def installed(self):
        """The installed version, or None when the distribution is not installed."""
        try:
            return metadata.version(self.distribution)
        except metadata.PackageNotFoundError:
            return None

    def holds(self):
        """Whether the installed version is inside the range."""
        installed = self.installed()
        return installed is not None and Version(installed) in SpecifierSet(self.versions)

    def __str__(self):
        return f"{self.distribution}{self.versions} (installed: {self.installed() or 'none'})"


def supported(what, requirements):
    """Whether every requirement holds; logs a warning naming those that do not, so what falls back is known."""
    outside = [requirement for requirement in requirements if not requirement.holds()]
    for requirement in outside:
        logger.warning("%s left off: written for %s; the library's own path is used instead", what, requirement)
    return not outside
