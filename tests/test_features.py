"""`python -m lxmert_s_msp.data.features import`: what the command prints and how it exits on corrupt rows."""

import numpy as np
import pytest
from region_files import FEATURE_DIM, REGIONS, make_image, write_tsv

from lxmert_s_msp.data.features import main
from lxmert_s_msp.data.store import FeatureStore

SIZE_FLAGS = ["--num-regions", str(REGIONS), "--feature-dim", str(FEATURE_DIM)]


def test_skip_bad_rows_counts_and_reports_each_row(tmp_path, capsys):
    images = [make_image(f"i{index}", 3, seed=index) for index in range(4)]
    images[1]["features"][0, 0] = np.nan
    images[3]["boxes"] = "@@@"
    path = write_tsv(tmp_path / "a.tsv", images)
    store_path = tmp_path / "store"

    main(["import", str(store_path), str(path), *SIZE_FLAGS, "--skip-bad-rows"])

    assert FeatureStore(store_path).image_ids == ["i0", "i2"]
    stderr = capsys.readouterr().err
    assert f"skipped {path}, line 2, field 'features': contains NaN or inf" in stderr
    assert f"skipped {path}, line 4, field 'boxes': bad base64" in stderr
    assert f"skipped 2 corrupt rows ({path}: 2)" in stderr


def test_without_skip_flag_the_command_exits_with_the_error(tmp_path, capsys):
    image = make_image("a", 3, seed=0)
    image["attrs_conf"][1] = 1.5
    path = write_tsv(tmp_path / "a.tsv", [image])
    with pytest.raises(SystemExit) as exit_info:
        main(["import", str(tmp_path / "store"), str(path), *SIZE_FLAGS])
    assert exit_info.value.code == 1
    assert f"{path}, line 1, field 'attrs_conf': confidence outside [0, 1]" in capsys.readouterr().err
