"""The experiment registry: ``gmmssl list`` shows these, ``gmmssl run NAME`` runs one."""
from experiments import pancakes

REGISTRY = {e.name: e for e in (pancakes.EXPERIMENT,)}


def get(name: str):
    """The experiment called ``name``; ValueError listing the known names otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; known experiments: {', '.join(REGISTRY)}")
    return REGISTRY[name]
