# Phase 3: the three AudioSet training stages of the paper (and, in the embedded profile, the CLIP heads'
# image-text pre-training on a synthetic caption corpus, standing in for OpenAI's weights).
# They are the DAG's critical path (each waits for the one before it, and every fine-tuning and evaluation job
# waits for them): `priority` runs a ready stage before ready fine-tuning or evaluation jobs when cores are short.


rule pretrain_clip:
    output:
        checkpoint_of("clip"),
    params:
        args=ARGS,
        run_dir=f"{W}/runs/clip",
        settings=section("train", "clip_pretrain") + section("data", "synthetic", "captions") + section("model"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/train/clip.log",
    benchmark:
        f"{LOGS}/benchmarks/train/clip.tsv"
    threads: TRAIN_THREADS
    priority: 10
    resources:
        gpu=TRAIN_GPUS,
    shell:
        "python -m pipeline train --stage clip --out {output} --run-dir {params.run_dir}"
        " {params.args} --threads {threads} 2> {log}"


rule train_stage1:
    input:
        cache=f"{W}/cache/audioset.h5",
        init=layout.audio_init(CFG),
    output:
        checkpoint_of("standalone"),
    params:
        args=ARGS,
        run_dir=f"{W}/runs/stage1",
        launch=TRAIN_CMD,
        init=" ".join(f"--init {p}" for p in layout.audio_init(CFG)),
        settings=section("train", "stage1") + section("augment") + section("model"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/train/stage1.log",
    benchmark:
        f"{LOGS}/benchmarks/train/stage1.tsv"
    threads: TRAIN_THREADS
    priority: 10
    resources:
        gpu=TRAIN_GPUS,
    shell:
        "{params.launch} train --stage stage1 --cache {input.cache} {params.init} --out {output} --run-dir {params.run_dir}"
        " {params.args} --threads {threads} 2> {log}"


rule train_stage2:
    input:
        cache=f"{W}/cache/audioset.h5",
        init=checkpoint_of("standalone"),
        clip_init=layout.clip_init(CFG),
    output:
        checkpoint_of("partial"),
    params:
        args=ARGS,
        run_dir=f"{W}/runs/stage2",
        launch=TRAIN_CMD,
        clip_init=" ".join(f"--clip-init {p}" for p in layout.clip_init(CFG)),
        settings=section("train", "stage2") + section("augment") + section("model"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/train/stage2.log",
    benchmark:
        f"{LOGS}/benchmarks/train/stage2.tsv"
    threads: TRAIN_THREADS
    priority: 10
    resources:
        gpu=TRAIN_GPUS,
    shell:
        "{params.launch} train --stage stage2 --cache {input.cache} --init {input.init} --out {output}"
        " {params.clip_init} --run-dir {params.run_dir} {params.args} --threads {threads} 2> {log}"


rule train_stage3:
    input:
        cache=f"{W}/cache/audioset.h5",
        init=checkpoint_of("partial"),
    output:
        checkpoint_of("full"),
    params:
        args=ARGS,
        run_dir=f"{W}/runs/stage3",
        launch=TRAIN_CMD,
        settings=section("train", "stage3") + section("augment") + section("model"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/train/stage3.log",
    benchmark:
        f"{LOGS}/benchmarks/train/stage3.tsv"
    threads: TRAIN_THREADS
    priority: 10
    resources:
        gpu=TRAIN_GPUS,
    shell:
        "{params.launch} train --stage stage3 --cache {input.cache} --init {input.init} --out {output}"
        " --run-dir {params.run_dir} {params.args} --threads {threads} 2> {log}"
