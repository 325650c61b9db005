"""Maps the three source folders onto one import tree (metadata lives in pyproject.toml).

sdk/ is imported as ``gramcast``, server/ as ``gramcast.server`` and training/ as
``gramcast.training``; sub-packages are discovered so that new folders need no edit here.
"""
from setuptools import find_packages, setup

ROOTS = {"gramcast": "sdk", "gramcast.server": "server", "gramcast.training": "training"}

packages, package_dir = [], {}
for name, folder in ROOTS.items():
    package_dir[name] = folder
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=package_dir)
