"""Reading a classifier's forward output, whatever shape its family returns it in (its logits,
its sentence embedding), and the tensors-in, logits-out view of a classifier that tracing needs
(ONNX export, TensorBoard's model graph)."""

from __future__ import annotations

import torch

from .bias_head import mean_over_tokens


def model_logits(output) -> torch.Tensor:
    """Logits from whatever a classifier's forward returns (ModelOutput, dict, tuple or tensor).

    >>> model_logits((torch.zeros(1, 2),)).shape
    torch.Size([1, 2])
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        return output["logits"]
    if hasattr(output, "logits"):
        return output.logits
    return output[0]


def sentence_embedding(output, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the last hidden states over each sentence's real tokens, ``(batch, width)``,
    from the output of a classifier called with ``output_hidden_states=True``.

    >>> hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])
    >>> sentence_embedding({"hidden_states": (hidden,)}, torch.tensor([[1, 1, 0]]))
    tensor([[2., 3.]])
    """
    hidden_states = (output.get("hidden_states") if isinstance(output, dict)
                     else getattr(output, "hidden_states", None))
    if not hidden_states:
        raise ValueError("the classifier returned no hidden states; a sentence embedding needs "
                         "a transformers encoder called with output_hidden_states=True")
    return mean_over_tokens(hidden_states[-1], attention_mask)


class LogitsOnly(torch.nn.Module):
    """``model`` called with positional tensors named ``input_names``, returning the logits
    tensor: tracers take positional tensors and return tensors, not ModelOutput objects.

    >>> traced_view = LogitsOnly(model, ["input_ids", "attention_mask"])  # doctest: +SKIP
    """

    def __init__(self, model: torch.nn.Module, input_names) -> None:
        super().__init__()
        self.model = model
        self.input_names = list(input_names)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return model_logits(self.model(**dict(zip(self.input_names, tensors))))
