"""runs/jobs.py: a pseudo-label job without the CAMs it reads is one error line naming the folder."""

from wsss.cli import main


def test_pseudo_labels_without_saved_cams_name_the_folder_and_the_command(reported, capsys):
    run, _ = reported  # CAMs were saved for val only
    capsys.readouterr()
    assert main(["pseudo", str(run), "--split", "train", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {run / 'cams/train'}: no CAM for ") and f"wsss cam {run} --split train" in err
    assert "\n" not in err
