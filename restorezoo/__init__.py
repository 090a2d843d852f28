"""The tooling around the bundles: the ``restorezoo`` command (:mod:`restorezoo.cli`), the benchmark against
classical baselines (:mod:`restorezoo.benchmark`, :mod:`restorezoo.baselines`), speed and memory
(:mod:`restorezoo.speed`), bundle validation (:mod:`restorezoo.bundle_check`) and model-zoo releases
(:mod:`restorezoo.export`).

The boundary: this package imports the runtime library :mod:`common` (what the bundles' configs use at training and
inference time), never the other way round, and a release vendors :mod:`common` alone. Every tool takes the bundle
or bundles folder as an argument, so it works from an installed package as well as from a checkout.
"""
