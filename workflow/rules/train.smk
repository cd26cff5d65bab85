# Phase 3: the three AudioSet training stages of the paper.


rule train_stage1:
    input:
        cache=f"{W}/cache/audioset.h5",
    output:
        checkpoint_of("standalone"),
    params:
        args=ARGS,
        run_dir=f"{W}/runs/stage1",
        settings=section("train", "stage1") + section("augment") + section("model"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/train/stage1.log",
    benchmark:
        f"{LOGS}/benchmarks/train/stage1.tsv"
    threads: workflow.cores
    shell:
        "python -m pipeline train --stage stage1 --cache {input.cache} --out {output} --run-dir {params.run_dir}"
        " {params.args} --threads {threads} 2> {log}"


rule train_stage2:
    input:
        cache=f"{W}/cache/audioset.h5",
        init=checkpoint_of("standalone"),
    output:
        checkpoint_of("partial"),
    params:
        args=ARGS,
        run_dir=f"{W}/runs/stage2",
        settings=section("train", "stage2") + section("augment") + section("model"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/train/stage2.log",
    benchmark:
        f"{LOGS}/benchmarks/train/stage2.tsv"
    threads: workflow.cores
    shell:
        "python -m pipeline train --stage stage2 --cache {input.cache} --init {input.init} --out {output}"
        " --run-dir {params.run_dir} {params.args} --threads {threads} 2> {log}"


rule train_stage3:
    input:
        cache=f"{W}/cache/audioset.h5",
        init=checkpoint_of("partial"),
    output:
        checkpoint_of("full"),
    params:
        args=ARGS,
        run_dir=f"{W}/runs/stage3",
        settings=section("train", "stage3") + section("augment") + section("model"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/train/stage3.log",
    benchmark:
        f"{LOGS}/benchmarks/train/stage3.tsv"
    threads: workflow.cores
    shell:
        "python -m pipeline train --stage stage3 --cache {input.cache} --init {input.init} --out {output}"
        " --run-dir {params.run_dir} {params.args} --threads {threads} 2> {log}"
