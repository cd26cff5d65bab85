"""Shared fixtures for the model tests: the reference TSVs and full-size models built once per session."""
from pathlib import Path

import pytest
import torch

REFERENCE_DIR = Path(__file__).resolve().parents[2].parent / 'shared' / 'reference'


def read_state_dict_tsv(name: str) -> list[tuple[str, str, str]]:
    """Rows (key, shape, dtype) of a reference state_dict layout; skip the test if the file is absent."""
    path = REFERENCE_DIR / name
    if not path.is_file():
        pytest.skip(f'reference layout {path} not available (expected beside the repository in shared/reference)')
    lines = path.read_text().splitlines()
    assert lines[0].split('\t') == ['key', 'shape', 'dtype']
    return [tuple(line.split('\t')) for line in lines[1:] if line]


def state_dict_rows(model: torch.nn.Module) -> list[tuple[str, str, str]]:
    """The model's state_dict in the TSV's format: (key, '(d0, d1)', 'float32')."""
    return [(k, str(tuple(v.shape)), str(v.dtype).removeprefix('torch.')) for k, v in model.state_dict().items()]


@pytest.fixture(scope='session')
def full_esresnext():
    from pipeline.models import create_model
    torch.manual_seed(0)
    return create_model('esresnext-fbsp').eval()


@pytest.fixture(scope='session')
def full_audioclip():
    from pipeline.models import create_model
    torch.manual_seed(0)
    return create_model('audioclip-rn50').eval()


@pytest.fixture(scope='session')
def esresnext_tsv():
    return read_state_dict_tsv('esresnext_fbsp_state_dict.tsv')


@pytest.fixture(scope='session')
def audioclip_tsv():
    return read_state_dict_tsv('audioclip_state_dict.tsv')


@pytest.fixture(scope='session')
def rows_of():
    """The function model -> state_dict rows, to compare with the TSV fixtures."""
    return state_dict_rows
