import pytest
import torch
from segment_anything import sam_model_registry

from blobs import blob_windows
from cosam_nn.modeling.losses import mask_iou, mask_loss
from cosam_nn.modeling.config import CoSAMConfig, USAMConfig
from cosam_nn.modeling.crops import crop_slices
from cosam_nn.modeling.cosam import CoSAM
from cosam_nn.modeling.sam_checkpoint import load_sam_checkpoint
from cosam_nn.modeling.usam import USAM
from cosam_nn.node_geometry import node_boxes


def _true_boxes(masks, windows):
    """Slice index (b * L + l) and box of every node cross-section in the given windows."""
    length = masks.shape[1]
    index, boxes = [], []
    for b in windows:
        t = node_boxes(masks[b])
        n, s = torch.nonzero(t.present, as_tuple=True)
        index.append(b * length + s)
        boxes.append(t.boxes[n, s])
    return torch.cat(index), torch.cat(boxes)


def _dice(model, x, slices_mask, windows):
    index, boxes = _true_boxes(slices_mask.view(x.shape[0], x.shape[2], *x.shape[-2:]), windows)
    with torch.no_grad():
        logits, _, _, regions = model.segment_boxes(x, index, boxes)
    target = crop_slices(slices_mask.view(-1, 1, *x.shape[-2:]).float(), index, regions, logits.shape[-1]) > 0.5
    pred = logits > 0
    return (2 * (pred & target).sum() / (pred.sum() + target.sum())).item()


def test_usam_learns_to_segment_a_blob_in_its_box():
    torch.manual_seed(0)
    model = CoSAM(CoSAMConfig.small(window=5))
    x, masks = blob_windows(8, length=5, size=48, seed=2)
    slices_mask = masks.float()
    opt = torch.optim.AdamW(model.usam.parameters(), 2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(100):
        windows = torch.randperm(6, generator=gen)[:3].tolist()
        index, boxes = _true_boxes(masks, windows)
        logits, iou, _, regions = model.segment_boxes(x, index, boxes)
        target = (crop_slices(slices_mask.view(-1, 1, 48, 48), index, regions, logits.shape[-1]) > 0.5).float()
        loss = mask_loss(logits, target) + torch.nn.functional.mse_loss(iou[:, 0], mask_iou(logits, target))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert _dice(model, x, slices_mask, [6, 7]) >= 0.8  # windows never trained on


def test_every_trainable_parameter_gets_a_gradient():
    """What DistributedDataParallel needs: no trainable parameter is left out of a box-prompted step."""
    torch.manual_seed(0)
    cfg = CoSAMConfig.small().usam
    usam = USAM(cfg)
    boxes = [torch.tensor([[10.0, 12, 30, 40], [5, 5, 20, 20], [30, 30, 60, 50]]),
             torch.tensor([[1.0, 2, 8, 9], [20, 20, 40, 44], [0, 0, 64, 64]])]
    masks, iou, tokens = usam(torch.randn(2, 1, cfg.img_size, cfg.img_size), boxes)
    assert masks.shape == (6, 1, cfg.img_size, cfg.img_size) and iou.shape == (6, 1) and tokens.shape == (6, cfg.prompt_dim)
    (masks.mean() + iou.mean()).backward()
    missing = [n for n, p in usam.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    frozen = {n for n, p in usam.named_parameters() if not p.requires_grad}
    unused_by_boxes = ("prompt_encoder.point_embeddings.0.", "prompt_encoder.point_embeddings.1.",
                       "prompt_encoder.not_a_point_embed.", "prompt_encoder.mask_downscaling.")
    assert frozen and all(n.startswith(unused_by_boxes) for n in frozen)


def test_wrong_input_size_is_refused():
    usam = USAM(CoSAMConfig.small().usam)
    with pytest.raises(ValueError, match="64 x 64"):
        usam(torch.randn(1, 1, 32, 32), [torch.tensor([[1.0, 1, 5, 5]])])


@pytest.fixture(scope="module")
def vit_b_checkpoint(tmp_path_factory):
    """An official-format SAM ViT-B checkpoint with random weights (nothing is downloaded)."""
    torch.manual_seed(0)
    sam = sam_model_registry["vit_b"]()
    path = tmp_path_factory.mktemp("sam") / "sam_vit_b_random.pth"
    state = sam.state_dict()
    torch.save(state, path)
    return path, state


def test_checkpoint_loader_loads_every_matching_tensor_and_names_the_rest(vit_b_checkpoint):
    path, state = vit_b_checkpoint
    model, report = load_sam_checkpoint(str(path))
    own = model.state_dict()
    assert model.cfg == USAMConfig()
    matching = [k for k, v in state.items() if k in own and own[k].shape == v.shape]
    assert sorted(report.loaded) == sorted(matching) and len(matching) > 150
    for k in matching:
        torch.testing.assert_close(own[k], state[k])
    adapted = dict(report.adapted)
    assert "image_encoder.pos_embed" in adapted and own["image_encoder.pos_embed"].shape == (1, 14, 14, 768)
    assert "image_encoder.blocks.2.attn.rel_pos_h" in adapted  # a global-attention block: 127 -> 27 rows
    torch.testing.assert_close(own["mask_decoder.mask_tokens.weight"], state["mask_decoder.mask_tokens.weight"][:1])
    skipped = dict(report.skipped)
    assert "image_encoder.patch_embed.proj.weight" in skipped
    assert "mask_decoder.output_upscaling.0.weight" in skipped
    accounted = set(report.loaded) | set(adapted) | set(skipped)
    assert accounted == set(state)  # every checkpoint tensor is loaded, adapted or named
    assert any(k.startswith("unet.") for k in report.not_in_checkpoint)
    assert any(k.startswith("mask_decoder.up_blocks.") for k in report.not_in_checkpoint)
    assert "image_encoder.pos_embed" in report.summary()


def test_missing_or_corrupt_checkpoint_is_a_clear_error(tmp_path):
    small = USAM(CoSAMConfig.small().usam)
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        load_sam_checkpoint(str(tmp_path / "nothere.pth"), small)
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="corrupt.pth: not a readable"):
        load_sam_checkpoint(str(bad), small)
    other = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="not a SAM checkpoint"):
        load_sam_checkpoint(str(other), small)


def test_checkpoint_of_another_size_or_that_barely_fits_is_refused(tmp_path, vit_b_checkpoint):
    path, state = vit_b_checkpoint
    vit_l = {"image_encoder.pos_embed": torch.zeros(1, 64, 64, 1024)}
    vit_l.update({f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(1024) for i in range(24)})
    torch.save(vit_l, tmp_path / "vit_l.pth")
    with pytest.raises(ValueError, match="width 1024 with 24 blocks; U-SAM needs width 768 with 12"):
        load_sam_checkpoint(str(tmp_path / "vit_l.pth"))
    # ViT-B's encoder size, but most tensors of another shape: nothing is loaded, the error says so
    bent = {k: (v[..., :1] if k.startswith(("mask_decoder.", "image_encoder.blocks.")) and v.ndim > 1 else v)
            for k, v in state.items()}
    torch.save(bent, tmp_path / "bent.pth")
    model = USAM(USAMConfig())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="SAM tensors fit"):
        load_sam_checkpoint(str(tmp_path / "bent.pth"), model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_mask_loss_does_not_push_node_masks_by_empty_ones():
    """Empty targets (unmatched boxes) add cross-entropy only, never a Dice term."""
    logits = torch.zeros(2, 1, 8, 8, requires_grad=True)
    target = torch.zeros(2, 1, 8, 8)
    target[0, 0, 2:5, 2:5] = 1
    both = mask_loss(logits, target)
    only_ce_for_empty = 0.4 * torch.nn.functional.binary_cross_entropy_with_logits(logits, target) + \
        0.6 * (1 - (2 * 0.5 * 9 + 1) / (0.5 * 64 + 9 + 1))
    torch.testing.assert_close(both, only_ce_for_empty)
    empty = torch.zeros(1, 1, 8, 8)
    torch.testing.assert_close(mask_loss(logits[1:], empty),
                               torch.nn.functional.binary_cross_entropy_with_logits(logits[1:], empty))
