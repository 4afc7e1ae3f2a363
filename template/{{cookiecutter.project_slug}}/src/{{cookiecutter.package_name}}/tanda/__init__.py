"""A5 — Learning to Compose Domain-Specific Transformations for data augmentation (Ratner et al. 2017, "TANDA").

Card:
    What: a generator over sequences of L transformation functions (TFs: small shifts, rotations,
        zooms, shears... any image-to-image module) is trained against a discriminator that tells
        real training images from transformed ones, so it learns which compositions keep images
        in-distribution; the learned policy then drives training augmentation (`TandaAugment`).
        Both generators of the paper: mean-field (a categorical per position) and LSTM.
    When it helps: you can list many plausible transformations but not which ones (or how many
        in a row) keep your images realistic; it also flags misspecified TFs (colour inversion on
        digits gets probability ~0).
    Cost: learning is a short adversarial run on unlabeled training images (seconds on CPU for
        digits); at training time one sampled sequence of L cheap TFs per image.
    Limit: the discriminator judges realism, not labels: a TF that turns one real-looking image
        into another (a 180° rotation makes a 6 a 9) is not caught; the A7 identity check is.

Commands:
    python -m <package>.tanda learn --out policies/tanda.pt   # learn on the training split, print/log the table
    python -m <package>.tanda compare                          # no augmentation vs uniform vs learned, several seeds

Why here: no PyTorch library implements TANDA (the authors' code is TensorFlow on Python 2);
torchvision's AutoAugment/RandAugment fix their own op lists and are not learned on your data.
"""

from .augment import TandaAugment
from .learn import Discriminator, apply_sequences, learn_policy, load_policy, save_policy
from .policy import LSTMPolicy, MeanFieldPolicy
from .tfs import Invert, Rotate, Shear, Shift, Zoom, default_tfs

__all__ = [
    "Discriminator",
    "Invert",
    "LSTMPolicy",
    "MeanFieldPolicy",
    "Rotate",
    "Shear",
    "Shift",
    "TandaAugment",
    "Zoom",
    "apply_sequences",
    "default_tfs",
    "learn_policy",
    "load_policy",
    "save_policy",
]
