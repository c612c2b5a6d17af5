"""Which parameters get weight decay (recipe key `weight_decay_params`).

- "transformers": Trainer's groups, no decay on biases and normalization weights (the default);
- "all": every parameter, as the original delphi suite did (it handed `model.parameters()` to AdamW).
"""

WEIGHT_DECAY_PARAMS = ("transformers", "all")
