"""Maps the four stage folders at the repository top onto subpackages of `tjepa`.

The user's layout keeps pipeline/, cache_schema/, train/ and eval/ at the top level; installing them
as tjepa.pipeline etc. keeps generic names like `train` out of site-packages. Subpackages are found
automatically so nobody has to edit a list when adding one.
"""

from setuptools import find_packages, setup

STAGES = ("pipeline", "cache_schema", "train", "eval")

packages = find_packages(include=["tjepa", "tjepa.*"])
for stage in STAGES:
    packages += ["tjepa." + p for p in find_packages(include=[stage, stage + ".*"])]

setup(packages=packages)
