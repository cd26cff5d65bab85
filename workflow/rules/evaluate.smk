# Phase 5: evaluation of the AudioSet-trained models (nothing here trains).


rule zeroshot:
    input:
        cache=f"{W}/cache/{{ftdataset}}.h5",
        checkpoint=lambda w: checkpoint_of(w.clipmodel),
    output:
        f"{W}/metrics/zeroshot/{{ftdataset}}/{{clipmodel}}.json",
    params:
        args=ARGS,
        settings=section("model", "prompt_template"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/evaluate/zeroshot_{{ftdataset}}_{{clipmodel}}.log",
    benchmark:
        f"{LOGS}/benchmarks/evaluate/zeroshot_{{ftdataset}}_{{clipmodel}}.tsv"
    threads: 1
    resources:
        gpu=MODEL_GPUS,
    shell:
        "python -m pipeline evaluate zeroshot --model {wildcards.clipmodel} --dataset {wildcards.ftdataset}"
        " --checkpoint {input.checkpoint} --cache {input.cache} --out {output} {params.args} --threads {threads} 2> {log}"


rule evaluate_audioset:
    input:
        cache=f"{W}/cache/audioset.h5",
        checkpoint=lambda w: checkpoint_of(w.mode),
    output:
        f"{W}/metrics/audioset/{{mode}}.json",
    params:
        args=ARGS,
        settings=section("model", "prompt_template"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/evaluate/audioset_{{mode}}.log",
    benchmark:
        f"{LOGS}/benchmarks/evaluate/audioset_{{mode}}.tsv"
    threads: 1
    resources:
        gpu=MODEL_GPUS,
    shell:
        "python -m pipeline evaluate audioset --model {wildcards.mode} --checkpoint {input.checkpoint} --cache {input.cache}"
        " --out {output} {params.args} --threads {threads} 2> {log}"


rule evaluate_imagenet:
    input:
        cache=f"{W}/cache/imagenet.h5",
        checkpoint=lambda w: checkpoint_of(w.clipmodel),
    output:
        f"{W}/metrics/imagenet/{{clipmodel}}.json",
    params:
        args=ARGS,
        settings=section("model", "prompt_template"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/evaluate/imagenet_{{clipmodel}}.log",
    benchmark:
        f"{LOGS}/benchmarks/evaluate/imagenet_{{clipmodel}}.tsv"
    threads: 1
    resources:
        gpu=MODEL_GPUS,
    shell:
        "python -m pipeline evaluate imagenet --model {wildcards.clipmodel} --checkpoint {input.checkpoint}"
        " --cache {input.cache} --out {output} {params.args} --threads {threads} 2> {log}"


rule evaluate_querying:
    input:
        caches=expand(f"{W}/cache/{{dataset}}.h5", dataset=layout.DATASETS),
        checkpoint=lambda w: checkpoint_of(w.clipmodel),
    output:
        f"{W}/metrics/querying/{{clipmodel}}.json",
    params:
        args=ARGS,
        caches=" ".join(f"--cache {d}={layout.cache(CFG, d)}" for d in layout.DATASETS),
        settings=section("model", "prompt_template"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/evaluate/querying_{{clipmodel}}.log",
    benchmark:
        f"{LOGS}/benchmarks/evaluate/querying_{{clipmodel}}.tsv"
    threads: 1
    resources:
        gpu=MODEL_GPUS,
    shell:
        "python -m pipeline evaluate querying --model {wildcards.clipmodel} --checkpoint {input.checkpoint} {params.caches}"
        " --out {output} {params.args} --threads {threads} 2> {log}"
