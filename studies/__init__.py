"""Optuna studies over generator designs (see studies/README.md). Never imported by effgan/."""
