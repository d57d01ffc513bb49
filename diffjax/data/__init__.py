"""Data: toy distributions with exact oracles, embedded digits, tfds pipelines, datasets."""
from diffjax.data.datasets import (ArrayDataset, ToyDataset, list_datasets, make_dataset,
                                   reference_samples, toy_distribution)
from diffjax.data.digits import load_digits
from diffjax.data.empirical import EmpiricalDistribution
from diffjax.data.toy import (Gaussian, GaussianMixture, gaussian, get_toy, grid25, list_toys,
                              random_mixture, ring8)
from diffjax.data.text import (OODTextSplits, encode_batch, load_ood_dataset, offline_benchmark,
                               train_bpe_tokenizer)
