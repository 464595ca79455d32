"""``lmsfa evaluate``: COCO box and mask AP of a model on an annotated data set."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "compute COCO box and mask AP, AP50 and AP75 of a model on an annotated data set"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="LMSF-A checkpoint (.pt) or exported ONNX file (.onnx)")
    parser.add_argument(
        "data", type=Path,
        help="annotated data in any format `lmsfa train` reads (COCO JSON, YOLO-seg data.yaml, label-map "
             "folder, .seg.nrrd files)",
    )
    parser.add_argument(
        "--images", type=Path, default=None, metavar="DIR",
        help="image folder that the file names of a COCO JSON in DATA are relative to (default: the folder "
             "images/ beside the JSON file when it exists, else the JSON file's own folder)",
    )
    parser.add_argument("--split", default="val", help="split of DATA to evaluate, where DATA has splits (default: val)")
    parser.add_argument(
        "--imgsz", type=int, nargs="+", default=None, metavar="PIXELS",
        help="network input size in pixels: one value (square) or height and width, multiples of 32 "
             "(default: the size the model was trained at)",
    )
    parser.add_argument("--conf", type=float, default=0.001, help="minimum class probability 0..1 of a detection (default: 0.001, as for COCO mAP)")
    parser.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold 0..1 between boxes of one class (default: 0.7)")
    parser.add_argument("--max-det", type=int, default=300, help="maximum detections per image (default: 300)")
    parser.add_argument("--batch", type=int, default=4, help="images per network call (default: 4)")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N' (default: auto)")
    parser.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                        help="runtime: PyTorch or ONNX Runtime; 'auto' picks by the model file's suffix (default: auto)")
    parser.add_argument("--sha256", default=None, help="expected SHA-256 of the model file; a mismatch is an error")
    parser.add_argument("--output", "-o", type=Path, default=None, metavar="JSON",
                        help="write the metrics to this JSON file (AP values in 0..1)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch and ONNX Runtime (default: their choice)")


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from ..errors import InputError
    from ..inference.predictor import Predictor
    from ..progress import Progress
    from ..training.datasets import open_dataset
    from ..training.evaluate import evaluate_model, format_table, write_json
    from .train import check_first_image, check_images_option

    if args.threads:
        torch.set_num_threads(args.threads)
    input_size = None
    if args.imgsz:
        if len(args.imgsz) not in (1, 2):
            raise InputError(f"--imgsz takes one or two values (pixels), got {args.imgsz}")
        input_size = (args.imgsz[0], args.imgsz[-1])

    if args.images is not None and not args.images.is_dir():
        raise InputError(f"--images {args.images}: folder not found; give the folder that contains the COCO images")
    dataset = open_dataset(args.data, args.split, image_root=args.images)
    check_images_option(dataset, args.images, args.data)
    check_first_image(dataset)

    predictor = Predictor(
        args.model, device=args.device, backend=args.backend, conf=args.conf, iou=args.iou,
        max_det=args.max_det, rectangular=False, input_size=input_size, expected_sha256=args.sha256,
        num_threads=args.threads,
    )
    if dataset.class_table.names != predictor.class_table.names:
        raise InputError(
            f"the model's classes {predictor.class_table.names} differ from the data set's "
            f"{dataset.class_table.names}. Evaluate on data annotated with the model's classes, or "
            f"train a model for these classes first (lmsfa train {args.data} -o RUN, with --weights "
            f"{args.model} to start from this model's weights)"
        )

    bar = tqdm(total=len(dataset), unit="image", dynamic_ncols=True)

    def show(done, total, message):
        bar.n = done
        bar.refresh()

    try:
        metrics = evaluate_model(
            None, dataset, predictor.input_size, predictor.class_table, batch_size=args.batch,
            predictor=predictor.predict, progress=Progress(show),
        )
    finally:
        bar.close()

    metrics["model"] = str(args.model)
    metrics["data"] = str(args.data)
    metrics["split"] = args.split
    metrics["input_size"] = list(predictor.input_size)
    metrics["conf"] = args.conf
    metrics["iou"] = args.iou
    print(format_table(metrics))
    if args.output is not None:
        write_json(metrics, args.output)
        print(f"metrics written to {args.output}")
    return 0
