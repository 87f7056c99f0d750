"""labgrader's science half: Fashion-MNIST, the lab kit, the sweep and the expected answers.

Submodules that train import torch; `reference.spec` and `reference.kit_install` do not.
"""
