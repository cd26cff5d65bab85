# Phase 2: decode each dataset once into an HDF5 cache at the model's sample rate.
# AudioSet is too big for one file or one job: it is cached in data.audioset.shards slices, built in
# parallel and each resumable on its own, then an index file reads them as one cache. Its segments whose
# video could not be had are skipped and listed in the cache (`cache-info`: skipped); ESC-50, US8K and ImageNet
# stop at the first unreadable file.


rule cache:
    input:
        raw=lambda w: raw_input(w.dataset),
    output:
        f"{W}/cache/{{dataset}}.h5",
    wildcard_constraints:
        dataset="esc50|us8k|imagenet",
    params:
        args=ARGS,
        root=lambda w, input: raw_folder(input.raw),
        settings=lambda w: section("data", w.dataset) + section("data", "sample_rate") + section("data", "cache_compression"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/cache/{{dataset}}.log",
    benchmark:
        f"{LOGS}/benchmarks/cache/{{dataset}}.tsv"
    threads: 1
    shell:
        "python -m pipeline cache --dataset {wildcards.dataset} --root {params.root} --out {output} {params.args} --threads {threads} 2> {log}"


rule cache_audioset_shard:
    input:
        raw=raw_input("audioset"),
    output:
        f"{W}/cache/audioset/shard-{{shard}}-of-{{shards}}.h5",
    wildcard_constraints:
        shard=r"\d+",
        shards=r"\d+",
    params:
        args=ARGS,
        root=lambda w, input: raw_folder(input.raw),
        shard=lambda w: f"{int(w.shard)}/{int(w.shards)}",
        settings=section("data", "audioset") + section("data", "sample_rate") + section("data", "cache_compression"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/cache/audioset/shard-{{shard}}-of-{{shards}}.log",
    benchmark:
        f"{LOGS}/benchmarks/cache/audioset/shard-{{shard}}-of-{{shards}}.tsv"
    threads: 1
    shell:
        "python -m pipeline cache --dataset audioset --root {params.root} --shard {params.shard} --on-error skip --out {output} {params.args} --threads {threads} 2> {log}"


rule cache_audioset_index:
    input:
        layout.cache_shards(CFG, "audioset"),
    output:
        f"{W}/cache/audioset.h5",
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/cache/audioset-index.log",
    threads: 1
    shell:
        "python -m pipeline cache-merge {input} --out {output} 2> {log}"
