"""Default experiment: the shared CNN on scikit-learn digits, 2 simulated GPUs, custom loop.

Every field of the experiment lives here; the other presets import this file and change a few
fields. Any field can be overridden on the command line, for example
`--config.train.global_batch_size=128`.
"""

import ml_collections


def get_config():
  """Returns the default experiment config (see README "Configuration" for every field)."""
  config = ml_collections.ConfigDict()

  # Which training loop drives the model: 'fit' (compiled Keras, model.fit) or 'custom'
  # (strategy.run inside tf.function, several steps per call).
  config.loop = 'custom'
  # Seed for weight initialisation, data order and augmentation.
  config.seed = 0
  # Turns on tf.config.experimental.enable_op_determinism: bit-identical reruns, a little slower.
  config.deterministic = False

  config.engine = ml_collections.ConfigDict()
  # 'default' (one device, no strategy), 'mirrored' (MirroredStrategy, many devices, one machine),
  # 'multi_worker' (MultiWorkerMirroredStrategy, many machines; roles from TF_CONFIG or Slurm) or
  # 'horovod' (one replica per Horovod rank).
  config.engine.name = 'mirrored'
  # Replicas (devices) per process. For 'mirrored' without GPUs, the CPU is split into this many
  # logical devices (simulated GPUs: checks correctness, not speed). Must be 1 for 'default' and
  # 'horovod'; 'multi_worker' uses all local GPUs (or the CPU) of each worker.
  config.engine.num_replicas = 2
  # 'auto' uses GPUs when TensorFlow sees enough of them, else CPU; 'cpu' or 'gpu' forces one.
  config.engine.device = 'auto'
  # Cross-device all-reduce for 'mirrored' on GPUs: 'nccl', 'hierarchical_copy' or 'reduction_to_one'
  # (CPU devices always use reduction_to_one).
  config.engine.all_reduce = 'nccl'
  # 'multi_worker': collective implementation ('auto', 'ring' or 'nccl'), the timeout of one
  # collective in seconds (0: none), and how long a worker waits for its peers at start-up.
  config.engine.collective = 'auto'
  config.engine.collective_timeout_seconds = 0
  config.engine.peer_timeout_seconds = 120
  # CPU budget of this process: 'auto' sizes TensorFlow's intra-op and inter-op thread pools and
  # tf.data's private pool from the cores this process may really use (CPU affinity, cgroup quota,
  # SLURM_CPUS_PER_TASK, shared by the local processes of the job); 'off' leaves TensorFlow's
  # defaults (every process sized for the whole machine). Positive thread counts override 'auto'.
  config.engine.cpu_budget = 'auto'
  config.engine.intra_op_threads = -1
  config.engine.inter_op_threads = -1
  # C allocator: 'retain' keeps freed memory in the process between steps (glibc's mallopt; the
  # next step's tensors then need no fresh, zeroed pages from the kernel), 'system' leaves the C
  # library's defaults. See trainer/memory.py.
  config.engine.malloc = 'retain'
  # 'horovod': scheduling priority of Horovod's own threads (its background thread and Gloo's):
  # 'normal', 'low' (nice 19), 'idle' (SCHED_IDLE: they run when the step's threads wait), or
  # 'auto': 'idle' for a rank pinned to one CPU, else 'normal'.
  config.engine.horovod_threads = 'auto'

  config.model = ml_collections.ConfigDict()
  # 'small_cnn' (Conv-SE-Pool-Dense, 8x8 to 64x64 inputs), 'resnet_cifar' (ResNet-20 style,
  # 32x32) or 'resnet50' (224x224).
  config.model.name = 'small_cnn'
  # Base width (filters of the first conv layer) for small_cnn and resnet_cifar.
  config.model.width = 32
  # Squeeze-and-excitation bottleneck ratio (0 disables the SE blocks).
  config.model.se_ratio = 0.25
  # Batch normalization: 'none', 'local' (statistics per replica) or 'sync' (statistics over the
  # global batch, synchronized across replicas: same results on any replica count).
  config.model.batch_norm = 'none'
  # L2 weight decay on conv and dense kernels (added to the loss as a regularization loss).
  config.model.weight_decay = 1e-4
  # Layout of the activations: 'channels_last' (NHWC, the only one TensorFlow's CPU kernels
  # support) or 'channels_first' (NCHW, often faster with cuDNN on GPUs; untested here: no GPU).
  config.model.data_format = 'channels_last'

  config.data = ml_collections.ConfigDict()
  # Where examples come from: 'digits' (scikit-learn's 8x8 digits, in memory), 'tfds' (a TFDS
  # dataset by name, e.g. the built-in 'convoy_digits', 'mnist', 'cifar10', 'imagenet2012'),
  # 'tfrecord' (shards in the ImageNet layout, see `python -m input_pipeline.convert`) or
  # 'synthetic' (random images, for measuring compute alone).
  config.data.source = 'tfds'
  # Square size the images are resized to (-1 keeps the source size; required for tfrecord).
  config.data.image_size = -1
  # Fraction of the digits held out for evaluation (never trained on).
  config.data.eval_fraction = 0.2
  # 'tfds': dataset name, its data_dir ('' = TFDS's default, ~/tensorflow_datasets) and splits.
  # 'tfds' and 'tfrecord': whether to decode the images once and hold them in memory (cache after
  # decode; augmentation still runs per example): 'auto' when the decoded images fit in a quarter
  # of ram_budget_mb (and, for tfrecord, all have one shape); 'yes'; 'no': decode every epoch
  # while streaming from the files.
  config.data.tfds_name = 'convoy_digits'
  config.data.data_dir = ''
  config.data.train_split = 'train'
  config.data.eval_split = 'test'
  config.data.in_memory = 'auto'
  # 'tfrecord': file patterns, number of classes, image channels and a label offset (-1 for
  # ImageNet shards whose labels start at 1).
  config.data.train_files = ''
  config.data.eval_files = ''
  config.data.num_classes = -1
  config.data.channels = 3
  config.data.label_offset = 0
  # Streamed sources: shuffle buffer (examples), files read in parallel, training augmentation
  # ('none', 'flip_crop' for 32x32 images, 'random_resized_crop' for ImageNet; evaluation then
  # uses a center crop).
  config.data.shuffle_buffer = 10000
  config.data.interleave_cycle_length = 16
  config.data.train_augment = 'none'
  # tf.data: deterministic element order (reproducible, exact resume), the RAM budget of tf.data's
  # autotuner in MiB, a private thread pool size (0: TensorFlow's shared pool), and the threads one
  # op inside the pipeline may use (1: the map already runs examples in parallel, so an op that
  # splits its work across the intra-op pool only adds hand-offs; 0: TensorFlow's default).
  config.data.deterministic_order = True
  config.data.ram_budget_mb = 4096
  config.data.private_threadpool_size = 0
  config.data.max_intra_op_parallelism = 1
  # Streamed sources: a record that cannot be read or decoded stops training with an error naming
  # its file (False), or is skipped and counted in summary.json (True; costs one scan at start).
  config.data.skip_corrupt = False
  # Number of examples per epoch for 'synthetic' data.
  config.data.synthetic_examples = 4096
  # Shape of synthetic images (height = width) and their classes.
  config.data.synthetic_image_size = 32
  config.data.synthetic_num_classes = 10
  # Batches prepared ahead of the accelerator (-1: tf.data.AUTOTUNE).
  config.data.prefetch = -1

  config.train = ml_collections.ConfigDict()
  # Examples per optimizer step over all replicas and workers (split evenly across replicas).
  config.train.global_batch_size = 64
  # Length of training: set exactly one of num_train_steps and num_epochs (the other to -1).
  config.train.num_train_steps = 600
  config.train.num_epochs = -1
  # Steps run inside one tf.function call (custom loop) / steps_per_execution (fit). Logging,
  # evaluation and checkpoint intervals must be multiples of it.
  config.train.steps_per_loop = 50
  config.train.log_every_steps = 100
  config.train.eval_every_steps = 300
  config.train.checkpoint_every_steps = 300
  config.train.max_checkpoints_to_keep = 3
  # Optimizer: 'sgd' (with momentum, Nesterov optional) or 'adam'.
  config.train.optimizer = 'sgd'
  config.train.momentum = 0.9
  config.train.nesterov = True
  # Learning rate for a global batch of 256; the applied peak is base * global_batch / 256
  # (the linear scaling rule).
  config.train.base_learning_rate = 0.4
  # Schedule after warm-up: 'constant', 'cosine' (to 0 at the last step) or 'step' (x0.1 at each
  # fraction of training listed in lr_boundaries).
  config.train.lr_schedule = 'cosine'
  config.train.lr_boundaries = (0.5, 0.75)
  # Linear warm-up from 0 to the peak learning rate, in optimizer steps.
  config.train.warmup_steps = 50
  # Gradient accumulation: each optimizer step sums the gradients of this many micro-batches of
  # global_batch_size examples, then communicates and applies them once. The effective batch (and
  # the learning-rate scaling, data position and summary) is accumulation_steps x global_batch_size.
  config.train.accumulation_steps = 1
  # Numerics: 'float32', 'mixed_bfloat16' (bfloat16 compute, float32 variables; fast on CPUs with
  # AVX512_BF16 and on TPUs/recent GPUs) or 'mixed_float16' (float16 compute with dynamic loss
  # scaling, for GPUs; both loops scale and unscale the loss).
  config.train.precision = 'float32'
  # mixed_float16: the loss scale to start from (halved after a step whose gradients overflow,
  # doubled after 2000 good steps).
  config.train.initial_loss_scale = 32768.0
  # Compile the training step with XLA (jit_compile), in both loops.
  config.train.jit_compile = False
  # A non-finite loss or gradient: 'stop' (exit 5 naming the step and the last good checkpoint,
  # which is kept) or 'skip' (that optimizer step is not applied on any replica; counted in
  # summary.json as nonfinite_steps_skipped).
  config.train.nonfinite = 'stop'
  # Learning rate when the effective batch differs from base 256: 'linear' (base x batch / 256,
  # also when resuming with another number of workers) or 'none' (base_learning_rate as is).
  config.train.lr_scaling = 'linear'
  # TensorBoard profiler capture of optimizer steps [start, stop) to workdir/profile (whole
  # windows of steps_per_loop are captured); (0, 0) captures nothing.
  config.train.profile_steps = (0, 0)
  # Export a SavedModel of the trained model to workdir/export at the end.
  config.train.export = True

  return config
