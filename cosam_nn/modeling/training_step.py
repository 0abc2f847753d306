"""CoSAM's training step, from a window and its label to the joined losses of one phase.

Phases (paper 4.4: detector and U-SAM pretrained separately, then trained end to end):

- "pretrain": the detector learns from its own losses. U-SAM is prompted by the true boxes,
  jittered by a random margin, and by the detector's proposals (boxes detached: matched ones take
  the node's mask as target, unmatched ones an empty mask, as in the released code). The CCM learns
  on detached mask tokens and sequence features, so no gradient crosses between the two networks.
- "joint": U-SAM is prompted by the detector's proposals only and the CCM sees the features with
  their gradients, so the CCM loss trains detector and U-SAM together; all losses are summed.

Every step runs every part (at least one box goes to U-SAM, a random background box with an
empty target if nothing else), so that all ranks of DistributedDataParallel follow the same path.
A proposal matches a node by the detector's rule (`match_quality` of their union boxes over the
window >= positive_iou); its target on a slice is that node's cross-section there.
"""
import torch
from torch.nn import functional as F

from cosam_nn.modeling.losses import mask_iou, mask_loss
from cosam_nn.modeling.crops import crop_slices
from cosam_nn.modeling.sequence_detector import match_quality
from cosam_nn.node_geometry import NodeBoxes, expand_boxes, node_boxes_and_instances, union_boxes

PHASES = ("pretrain", "joint")


def window_targets(labels):
    """labels (B, L, H, W) -> list of (NodeBoxes, instance map tensor (L, H, W))."""
    out = []
    for lab in labels:
        boxes, instances = node_boxes_and_instances(lab > 0)
        on_device = NodeBoxes(boxes.boxes.to(lab.device), boxes.present.to(lab.device), boxes.voxels.to(lab.device))
        out.append((on_device, torch.from_numpy(instances).to(lab.device)))
    return out


def jitter_boxes(boxes, max_margin, height, width):
    """Grow each side of boxes (M, 4) by a random 0..max_margin pixels (SAM prompt jitter), clipped."""
    return expand_boxes(boxes, torch.rand_like(boxes) * max_margin, height, width)


def _true_prompts(window_targets_, length, cap, jitter, h, w):
    """Jittered true boxes of node cross-sections: (slice index, box, instance id) up to cap per window."""
    index, boxes, ids = [], [], []
    for b, (t, _) in enumerate(window_targets_):
        n, s = torch.nonzero(t.present, as_tuple=True)
        if len(n) > cap:
            pick = torch.randperm(len(n), device=n.device)[:cap]
            n, s = n[pick], s[pick]
        index.append(b * length + s)
        boxes.append(jitter_boxes(t.boxes[n, s], jitter, h, w))
        ids.append(n + 1)
    return torch.cat(index), torch.cat(boxes), torch.cat(ids)


def _chosen_proposals(det, window_targets_, cap, det_cfg, presence_threshold):
    """Per window, up to cap proposals (matched ones first), with their matched node id (0: none)."""
    chosen = []
    for b, (t, _) in enumerate(window_targets_):
        valid = torch.nonzero(det["valid"][b]).squeeze(1)
        present = det["presence"][b].detach().sigmoid() > presence_threshold
        node = torch.zeros(len(valid), dtype=torch.long, device=valid.device)
        if len(t) and len(valid):
            iou = match_quality(union_boxes(det["boxes"][b][valid].detach(), present[valid]),
                                union_boxes(t.boxes, t.present), det_cfg)
            best_iou, best = iou.max(1)
            node = torch.where(best_iou >= det_cfg.positive_iou, best + 1, node)
        dev = node.device
        order = torch.cat([torch.nonzero(node > 0).squeeze(1)[torch.randperm(int((node > 0).sum()), device=dev)],
                           torch.nonzero(node == 0).squeeze(1)[torch.randperm(int((node == 0).sum()), device=dev)]])
        pos = order[node[order] > 0][: (cap + 1) // 2]
        neg = order[node[order] == 0][: cap - len(pos)]
        keep = torch.cat([pos, neg])
        chosen.append((valid[keep], node[keep]))
    return chosen


def _proposal_prompts(det, chosen, window_targets_, length, presence_threshold, max_slices):
    """Boxes of the chosen proposals on up to max_slices of their slices: (slice index, box, node id, owner row)."""
    index, boxes, ids, owner = [], [], [], []
    row = 0
    for b, (props, nodes) in enumerate(chosen):
        t = window_targets_[b][0]
        for p, node in zip(props.tolist(), nodes.tolist()):
            slices = det["presence"][b][p].detach().sigmoid() > presence_threshold
            if node:
                slices = slices | t.present[node - 1].to(slices.device)
            if not slices.any():
                slices[det["presence"][b][p].argmax()] = True
            s = torch.nonzero(slices).squeeze(1)
            s = s[torch.randperm(len(s), device=s.device)[:max_slices]]  # bounds U-SAM's memory
            index.append(b * length + s)
            boxes.append(det["boxes"][b][p][s].detach())
            ids.append(torch.full_like(s, node))
            owner.append(torch.full_like(s, row))
            row += 1
    if not index:
        return None
    return torch.cat(index), torch.cat(boxes), torch.cat(ids), torch.cat(owner)


def _background_prompt(window, size):
    """One random box of `size` pixels somewhere in the window, target empty."""
    b, _, length, h, w = window.shape
    x0 = float(torch.randint(0, max(1, w - size), (1,)))
    y0 = float(torch.randint(0, max(1, h - size), (1,)))
    box = torch.tensor([[x0, y0, min(w, x0 + size), min(h, y0 + size)]], device=window.device)
    return torch.randint(0, b * length, (1,), device=window.device), box, torch.zeros(1, dtype=torch.long, device=window.device)


def _mask_targets(instances, index, ids, regions, size):
    """Crops of each prompt's node (id > 0) or an empty mask (id 0): (M, 1, size, size) in {0, 1}."""
    stacked = torch.stack([inst for inst in instances]).flatten(0, 1)  # (B*L, H, W)
    node_masks = (stacked[index] == ids.view(-1, 1, 1)) & (ids.view(-1, 1, 1) > 0)
    cropped = crop_slices(node_masks.unsqueeze(1).float(), torch.arange(len(index), device=index.device), regions, size)
    return (cropped > 0.5).float()


def training_losses(model, window, labels, phase):
    """All losses of one step. window (B, 1, L, H, W) normalised CT; labels (B, L, H, W) node > 0.

    Returns a dict of scalar tensors; 'loss' is their sum.
    """
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES}")
    b, _, length, h, w = window.shape
    cfg = model.cfg
    targets = window_targets(labels)
    det = model.detector(window, [t for t, _ in targets])
    losses = dict(det["losses"])

    prompts = []
    if phase == "pretrain":
        prompts.append(_true_prompts(targets, length, cfg.train_true_boxes, cfg.prompt_jitter, h, w))
    chosen = _chosen_proposals(det, targets, cfg.train_proposals_per_window, cfg.detector, cfg.presence_threshold)
    from_detector = _proposal_prompts(det, chosen, targets, length, cfg.presence_threshold, cfg.train_slices_per_proposal)
    if from_detector is not None:
        prompts.append(from_detector[:3])
    index, boxes, ids = (torch.cat(parts) for parts in zip(*prompts)) if prompts else (None, None, None)
    if index is None or len(index) == 0:
        index, boxes, ids = _background_prompt(window, cfg.crop_size // 4)

    masks, iou, tokens, regions = model.segment_boxes(window, index, boxes)
    target = _mask_targets([inst for _, inst in targets], index, ids, regions, masks.shape[-1])
    losses["usam_mask"] = mask_loss(masks, target)
    losses["usam_iou"] = F.mse_loss(iou[:, 0], mask_iou(masks, target))

    if model.ccm is not None and from_detector is not None:
        tail = slice(len(index) - len(from_detector[0]), None)  # the detector prompts come last
        tail_tokens = tokens[tail]
        seq = torch.cat([det["seq_features"][bi][props] for bi, (props, _) in enumerate(chosen)])
        matched = torch.cat([(nodes > 0).long() for _, nodes in chosen])
        if phase == "pretrain":
            tail_tokens, seq = tail_tokens.detach(), seq.detach()
        logits = model.ccm_logits(tail_tokens, from_detector[3], seq)
        losses["ccm"] = F.cross_entropy(logits, matched)
    elif model.ccm is not None:
        losses["ccm"] = sum(p.sum() for p in model.ccm.parameters()) * 0.0  # keeps DDP's every-parameter rule
    losses["loss"] = sum(losses.values())
    return losses
