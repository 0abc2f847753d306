"""The 2.5D sequence-based detector (paper section 4.2).

Stage 1, dense sequence proposals: at every location of the stride-4 feature grid, the features
of all L slices at that location (a columnar region) predict, for the location's anchor box, an
objectness score and, for each slice, a box and whether the candidate is present on that slice: one
proposal follows one candidate frame by frame. At inference proposals are ranked by objectness and
the auxiliary dense head together (`_dense_ranking`), then screened by NMS on their union boxes.

Stage 2: each proposal's box on each slice is RoI-pooled from that slice's features
(`torchvision.ops.roi_align`, eq. 1), the L pooled features become L tokens, the sequence
features (eq. 2), a transformer encoder relates them (eq. 3), and a decoder with learnable queries
(eq. 4), one per slice and one class query, refines the box and presence per slice and scores the
proposal. The class token is the proposal's sequence feature handed to the CCM.

Matching: stage 1 assigns a grid location's anchor to the smallest node whose union box (over the
window) has its centre region around that location (within max(stride, 0.3 x size) of the centre);
stage 2 assigns a proposal to the node of highest `match_quality` (IoU of the union boxes, each
grown by match_margin pixels, so that a pixel's miss of a tiny node is still a match) if that is
>= positive_iou, and the true tubes and jittered copies of them are added to the proposals in
training. Losses: sigmoid focal loss for the dense
objectness, BCE (calibrated, so that scores can be thresholded) for the proposal class and
per-slice presence, smooth L1 on box deltas plus GIoU loss on decoded boxes on the slices where the
node is present, and an auxiliary per-slice focal loss on each slice's features (cells inside a
node's box; Retina U-Net's idea) that gives the backbone dense supervision.
"""
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import box_iou, generalized_box_iou_loss, nms, roi_align, sigmoid_focal_loss

from cosam_nn.modeling.backbone import SliceBackbone, SliceFeatureCache, run_per_slice
from cosam_nn.modeling.config import DetectorConfig
from cosam_nn.node_geometry import union_boxes

_MAX_LOG_SCALE = 4.0

PRIOR_LOGIT = -4.6            # objectness starts at 0.01, as in focal-loss detectors (RetinaNet)
PADDING_SCORE_LOGIT = -20.0   # score of the padding rows of a batch of proposals: never kept
ROI_SAMPLING_RATIO = 2        # bilinear samples per RoI bin and axis (torchvision's roi_align)


def encode_boxes(reference, boxes):
    """Deltas (dx, dy, dw, dh) that take reference boxes (…, 4) to boxes (…, 4)."""
    rw, rh = (reference[..., 2] - reference[..., 0]).clamp(min=1e-3), (reference[..., 3] - reference[..., 1]).clamp(min=1e-3)
    bw, bh = (boxes[..., 2] - boxes[..., 0]).clamp(min=1e-3), (boxes[..., 3] - boxes[..., 1]).clamp(min=1e-3)
    dx = ((boxes[..., 0] + boxes[..., 2]) - (reference[..., 0] + reference[..., 2])) / (2 * rw)
    dy = ((boxes[..., 1] + boxes[..., 3]) - (reference[..., 1] + reference[..., 3])) / (2 * rh)
    return torch.stack([dx, dy, torch.log(bw / rw), torch.log(bh / rh)], dim=-1)


def decode_boxes(reference, deltas):
    """Inverse of `encode_boxes`."""
    rw, rh = reference[..., 2] - reference[..., 0], reference[..., 3] - reference[..., 1]
    cx = (reference[..., 0] + reference[..., 2]) / 2 + deltas[..., 0] * rw
    cy = (reference[..., 1] + reference[..., 3]) / 2 + deltas[..., 1] * rh
    w = rw * torch.exp(deltas[..., 2].clamp(max=_MAX_LOG_SCALE))
    h = rh * torch.exp(deltas[..., 3].clamp(max=_MAX_LOG_SCALE))
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def anchor_centres(anchors):
    """(cx, cy), each (...), of anchors (..., 4)."""
    return (anchors[..., 0] + anchors[..., 2]) / 2, (anchors[..., 1] + anchors[..., 3]) / 2


def match_iou(boxes, targets, margin):
    """IoU (N, T) of boxes (N, 4) and targets (T, 4), each grown by `margin` pixels on every side.

    Plain IoU punishes tiny boxes: a 4 x 4 px node missed by 1 px in x and y scores 0.39 and would
    be a negative for stage 2, the CCM and U-SAM. Grown by 2 px the same pair scores 0.62, while a
    40 px node's IoUs barely change.
    """
    grow = torch.tensor([-margin, -margin, margin, margin], dtype=boxes.dtype, device=boxes.device)
    return box_iou(boxes + grow, targets.to(boxes.device) + grow)


def match_quality(boxes, targets, cfg):
    """(N, T) match of proposals' union boxes (N, 4) with nodes' (T, 4) by the detector config's rule
    (`match_iou` with `match_margin`); a pair matches when this is >= positive_iou."""
    return match_iou(boxes, targets, cfg.match_margin)


def dense_cells(anchors, target, stride):
    """(L, h, w, N) bool: grid cell (stride x stride, centred on its anchors (h, w, A, 4)) overlaps
    node n's box on that slice. (Cells whose centre lies inside would leave a 3 px node between two
    centres without any positive cell.)"""
    cx, cy = anchor_centres(anchors[:, :, 0])
    half = stride / 2
    boxes = target.boxes.to(anchors.device).transpose(0, 1)[:, None, None]  # (L, 1, 1, N, 4)
    cx, cy = cx[None, ..., None], cy[None, ..., None]
    return ((cx + half > boxes[..., 0]) & (cx - half < boxes[..., 2])
            & (cy + half > boxes[..., 1]) & (cy - half < boxes[..., 3])
            & target.present.to(anchors.device).T[:, None, None, :])


def dense_targets(anchors, target, stride):
    """(L, h, w) float: 1 where a grid cell overlaps a node's box on that slice (`dense_cells`)."""
    return dense_cells(anchors, target, stride).any(-1).float()


def _node_shares(counts):
    """Per node (N,), the weight of each of its `counts` entries that gives every node with entries the
    same total, the mean count of those nodes; 0 for nodes without entries."""
    present = counts > 0
    return torch.where(present, counts[present].mean() / counts.clamp(min=1), torch.zeros_like(counts))


def jitter_tube(boxes, fraction=0.25):
    """Tubes (N, L, 4) moved and resized by up to `fraction` of each tube's size (at least 1 px),
    one random draw per tube, the same on all its slices (a proposal tracks a node as a whole)."""
    size = (boxes[..., 2:] - boxes[..., :2]).amax(1, keepdim=True).repeat(1, 1, 2)  # (N, 1, 4): w, h, w, h
    step = (size * fraction).clamp(min=1.0)
    shift = (torch.rand(boxes.shape[0], 1, 2, device=boxes.device) * 2 - 1).repeat(1, 1, 2)
    grow = torch.rand(boxes.shape[0], 1, 4, device=boxes.device) * 2 - 1
    sign = torch.tensor([-0.5, -0.5, 0.5, 0.5], device=boxes.device)
    moved = boxes + step * (shift + sign * grow)
    lo = moved[..., :2].clamp(min=0)
    return torch.cat([lo, torch.maximum(moved[..., 2:], lo + 1)], -1)


def node_balanced_weights(assigned):
    """Weights (any shape) from the node index of each location or proposal (-1: background):
    background 1, and each node's entries share the same total, the mean number of entries per node.
    A large node owns a block of stage-1 locations (and matches many stage-2 proposals), a small one
    one or two; unweighted, the large nodes' positives would outweigh the small nodes' many times over."""
    weights = torch.ones(assigned.shape, device=assigned.device)
    pos = assigned >= 0
    if pos.any():
        weights[pos] = _node_shares(torch.bincount(assigned[pos]).float())[assigned[pos]]
    return weights


@dataclass
class Proposals:
    """Sequence proposals of one window: boxes (N, L, 4), present (N, L) bool, scores (N,)."""
    boxes: torch.Tensor
    present: torch.Tensor
    scores: torch.Tensor


def _box_losses(pred_boxes, pred_deltas, target_boxes, reference, weight_mask):
    """Smooth L1 on deltas + GIoU on boxes, their means over the entries (P, L) where weight_mask is True."""
    if not weight_mask.any():
        zero = pred_deltas.sum() * 0.0
        return zero, zero
    target_deltas = encode_boxes(reference[weight_mask], target_boxes[weight_mask])
    l1 = F.smooth_l1_loss(pred_deltas[weight_mask], target_deltas, beta=1 / 9, reduction="none").mean(-1)
    giou = generalized_box_iou_loss(pred_boxes[weight_mask], target_boxes[weight_mask], reduction="none")
    return l1.mean(), giou.mean()


class ProposalHead(nn.Module):
    """Columnar features (B, L, C, h, w) -> for the one anchor (A = 1) per location: objectness
    (B, h, w, A), deltas (B, h, w, A, L, 4), presence (B, h, w, A, L)."""

    def __init__(self, window, channels, anchors=1):
        super().__init__()
        self.window, self.anchors = window, anchors
        self.body = nn.Sequential(nn.Conv2d(window * channels, 2 * channels, 3, padding=1),
                                  nn.GroupNorm(8, 2 * channels), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(2 * channels, anchors * (1 + 5 * window), 1)
        nn.init.constant_(self.out.bias[:anchors], PRIOR_LOGIT)

    def forward(self, feats):
        b, length, c, h, w = feats.shape
        a = self.anchors
        x = self.out(self.body(feats.reshape(b, length * c, h, w))).permute(0, 2, 3, 1)
        return (x[..., :a], x[..., a:a + 4 * length * a].reshape(b, h, w, a, length, 4),
                x[..., a + 4 * length * a:].reshape(b, h, w, a, length))


class SequenceDetector(nn.Module):
    """Window (B, 1, L, H, W) -> sequence proposals -> refined per-slice boxes and scores.

    forward(window, targets=None) returns a dict:
      'proposals': list of B `Proposals` (stage 1, screened)
      'boxes' (B, N, L, 4), 'presence' (B, N, L) logits, 'scores' (B, N) logits,
      'seq_features' (B, N, D): stage 2 outputs for the N proposals (padded with zero boxes and
      score logits of -20 where a window has fewer than N proposals).
      'losses': dict of scalar losses when `targets` (list of B `NodeBoxes`) is given.
    """

    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        self.cfg = cfg
        length, c, d = cfg.window, cfg.feature_dim, cfg.token_dim
        self.backbone = SliceBackbone(cfg.channels, c)
        self.proposal_head = ProposalHead(length, c)
        self.dense_head = nn.Conv2d(c, 1, 1)  # auxiliary: is this cell inside a node's box on its slice?
        nn.init.constant_(self.dense_head.bias, PRIOR_LOGIT)
        self.roi_embed = nn.Sequential(nn.Flatten(1), nn.Linear(c * cfg.roi_size ** 2, d), nn.ReLU(inplace=True))
        self.box_embed = nn.Linear(4, d)
        self.presence_embed = nn.Embedding(2, d)
        self.slice_embed = nn.Parameter(torch.randn(length, d) * 0.02)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, cfg.heads, 2 * d, dropout=0.0, batch_first=True, norm_first=True),
            cfg.encoder_layers, enable_nested_tensor=False)
        self.queries = nn.Embedding(length + 1, d)  # one per slice, one class query
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(d, cfg.heads, 2 * d, dropout=0.0, batch_first=True, norm_first=True),
            cfg.decoder_layers)
        self.box_head = nn.Linear(d, 4)
        self.presence_head = nn.Linear(d, 1)
        self.class_head = nn.Linear(d, 1)
        nn.init.zeros_(self.box_head.weight)
        nn.init.zeros_(self.box_head.bias)
        self._slice_cache = None  # CPU inference only, see _cache_for

    def train(self, mode=True):
        self._slice_cache = None  # features of other weights must never be reused
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        self._slice_cache = None
        super()._load_from_state_dict(*args, **kwargs)

    def _cache_for(self, window, targets):
        """The slice feature cache, in CPU inference only (on a GPU hashing costs a copy to the host)."""
        if targets is not None or self.training or torch.is_grad_enabled() or window.device.type != "cpu" \
                or not self.cfg.feature_cache_mib:
            return None
        if self._slice_cache is None:
            self._slice_cache = SliceFeatureCache(self.cfg.feature_cache_mib)
        return self._slice_cache

    # ---- stage 1 ------------------------------------------------------------------------------
    def _anchors(self, h, w, image_hw, device):
        sy, sx = image_hw[0] / h, image_hw[1] / w
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * sy
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * sx
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        half = self.cfg.anchor_size / 2
        cx, cy = cx[..., None], cy[..., None]
        return torch.stack([cx - half, cy - half, cx + half, cy + half], dim=-1)  # (h, w, A = 1, 4)

    def _assign_locations(self, anchors, target):
        """Index of the node assigned to each location's anchor (h, w, A), -1 for background."""
        h, w, a, _ = anchors.shape
        if len(target) == 0:
            return torch.full((h, w, a), -1, dtype=torch.long, device=anchors.device)
        union = union_boxes(target.boxes, target.present).to(anchors.device)
        cx, cy = anchor_centres(anchors[:, :, :1])  # (h, w, 1)
        ux, uy = (union[:, 0] + union[:, 2]) / 2, (union[:, 1] + union[:, 3]) / 2
        uw, uh = union[:, 2] - union[:, 0], union[:, 3] - union[:, 1]
        rx = torch.clamp(0.3 * uw, min=self.cfg.stride)
        ry = torch.clamp(0.3 * uh, min=self.cfg.stride)
        inside = ((cx[..., None] - ux).abs() <= rx) & ((cy[..., None] - uy).abs() <= ry)  # (h, w, A, N)
        area = torch.where(inside, (uw * uh).expand_as(inside), torch.full_like(inside, float("inf"), dtype=torch.float32))
        best = area.argmin(-1)
        return torch.where(inside.any(-1), best, torch.full_like(best, -1))

    def _dense_loss(self, feats, anchors, targets):
        """Auxiliary per-slice loss (as in Retina U-Net): focal loss of a 1x1 head on each slice's
        features against `dense_targets`. Dense supervision teaches the backbone what a node looks
        like far sooner than the few positive locations of the objectness alone: without it, the
        small detector often found nothing after 320 CPU iterations."""
        b, length, _, h, w = feats.shape
        logits = self.dense_head(feats.flatten(0, 1)).view(b, length, h, w)
        target = torch.stack([dense_targets(anchors, t, self.cfg.stride) for t in targets])
        loss = sigmoid_focal_loss(logits, target, reduction="none")
        return loss.sum() / max(1.0, float(target.sum()))

    def _stage1_losses(self, objectness, deltas, presence, anchors, targets):
        obj_t, obj_w, box_l1, box_giou, pres = [], [], [], [], []
        for b, target in enumerate(targets):
            assigned = self._assign_locations(anchors, target)
            pos = assigned >= 0
            balanced = node_balanced_weights(assigned)
            obj_t.append(pos.float())
            obj_w.append(balanced if self.cfg.node_balanced_objectness
                         else torch.ones(assigned.shape, device=assigned.device))
            if not pos.any():
                continue
            nodes = assigned[pos]
            t_boxes = target.boxes.to(anchors.device)[nodes]  # (P, L, 4)
            t_present = target.present.to(anchors.device)[nodes]  # (P, L)
            ref = anchors[pos].unsqueeze(1).expand_as(t_boxes)
            pred = decode_boxes(ref, deltas[b][pos])
            l1, giou = _box_losses(pred, deltas[b][pos], t_boxes, ref, t_present)
            box_l1.append(l1)
            box_giou.append(giou)
            pres.append(F.binary_cross_entropy_with_logits(presence[b][pos], t_present.float(), reduction="none")
                        .mean(1).mean())
        obj_t = torch.stack(obj_t)
        num_pos = max(1.0, float(obj_t.sum()))
        zero = objectness.sum() * 0.0
        objectness_loss = (sigmoid_focal_loss(objectness, obj_t, reduction="none") * torch.stack(obj_w)).sum() / num_pos
        return {"rpn_objectness": objectness_loss,
                "rpn_box_l1": torch.stack(box_l1).mean() if box_l1 else zero + deltas.sum() * 0.0,
                "rpn_box_giou": torch.stack(box_giou).mean() if box_giou else zero,
                "rpn_presence": torch.stack(pres).mean() if pres else zero + presence.sum() * 0.0}

    def _dense_ranking(self, objectness, feats):
        """Inference: the logit of sqrt(objectness x the dense head's probability on the window's best
        slice), by which stage-1 proposals are ranked. The dense head learns from every cell a node's
        box overlaps, the objectness from a few cells per node; after a short training the objectness
        of all proposals lies within 0.09-0.2, a weak ranking on its own."""
        b, length, _, h, w = feats.shape
        dense = self.dense_head(feats.flatten(0, 1)).view(b, length, h, w).amax(1).unsqueeze(-1)
        return torch.logit(torch.sqrt(objectness.sigmoid() * dense.sigmoid()), eps=1e-6)

    def _stage1(self, window, targets=None):
        """Backbone features (B, L, C, h, w) at stride 4, stage 1's maps, the anchors, and the scores
        by which its proposals are ranked (the objectness in training, `_dense_ranking` at inference)."""
        feats = run_per_slice(self.backbone, window, self._cache_for(window, targets))
        objectness, deltas, presence = self.proposal_head(feats)
        anchors = self._anchors(feats.shape[-2], feats.shape[-1], window.shape[-2:], window.device)
        rank = self._dense_ranking(objectness, feats) if targets is None else objectness
        return feats, objectness, deltas, presence, anchors, rank

    @torch.no_grad()
    def _screen(self, objectness, deltas, presence, anchors, image_hw, keep, pre_nms_top_k=None, nms_iou=None):
        """Top proposals per window after score ranking and NMS on union boxes (top-k and IoU: the
        config's unless given)."""
        out = []
        h_img, w_img = image_hw
        pre_nms_top_k = self.cfg.pre_nms_top_k if pre_nms_top_k is None else pre_nms_top_k
        nms_iou = self.cfg.proposal_nms_iou if nms_iou is None else nms_iou
        for b in range(objectness.shape[0]):
            scores = objectness[b].sigmoid().flatten()
            k = min(pre_nms_top_k, scores.numel())
            top = scores.topk(k).indices
            ref = anchors.reshape(-1, 4)[top].unsqueeze(1).expand(-1, self.cfg.window, -1)
            boxes = decode_boxes(ref, deltas[b].reshape(-1, self.cfg.window, 4)[top])
            boxes = torch.stack([boxes[..., 0].clamp(0, w_img), boxes[..., 1].clamp(0, h_img),
                                 boxes[..., 2].clamp(0, w_img), boxes[..., 3].clamp(0, h_img)], dim=-1)
            present = presence[b].reshape(-1, self.cfg.window)[top].sigmoid() > 0.5
            present[:, self.cfg.window // 2] |= ~present.any(1)  # a proposal lives on >= 1 slice
            union = union_boxes(boxes, present)
            valid = ((union[:, 2] - union[:, 0]) > 0.5) & ((union[:, 3] - union[:, 1]) > 0.5)
            idx = torch.nonzero(valid).squeeze(1)
            idx = idx[nms(union[idx], scores[top][idx], nms_iou)[:keep]]
            out.append(Proposals(boxes[idx], present[idx], scores[top][idx]))
        return out

    # ---- stage 2 ------------------------------------------------------------------------------
    def _with_true_tubes(self, proposals, targets):
        """Training: each window's proposals plus its true tubes and `true_tube_copies` jittered copies
        of each (stage 2 then sees near-misses of small nodes, labelled by `match_iou` like any proposal)."""
        merged = []
        for p, t in zip(proposals, targets):
            if len(t) == 0:
                merged.append(p)
                continue
            tb, tp = t.boxes.to(p.boxes.device), t.present.to(p.boxes.device)
            filled = torch.where(tp.unsqueeze(-1), tb, union_boxes(tb, tp).unsqueeze(1).expand_as(tb))
            tubes = [filled] + [jitter_tube(filled) for _ in range(self.cfg.true_tube_copies)]
            merged.append(Proposals(torch.cat([p.boxes, *tubes]), torch.cat([p.present] + [tp] * len(tubes)),
                                    torch.cat([p.scores, torch.ones(len(t) * len(tubes), device=p.scores.device)])))
        return merged

    def _pad(self, proposals, n):
        """Stack a list of Proposals to (B, n, ...) with a validity mask."""
        length, dev = self.cfg.window, proposals[0].boxes.device
        boxes = torch.zeros(len(proposals), n, length, 4, device=dev)
        present = torch.zeros(len(proposals), n, length, dtype=torch.bool, device=dev)
        valid = torch.zeros(len(proposals), n, dtype=torch.bool, device=dev)
        for b, p in enumerate(proposals):
            k = min(n, len(p.scores))
            boxes[b, :k], present[b, :k], valid[b, :k] = p.boxes[:k], p.present[:k], True
        return boxes, present, valid

    def _stage2(self, feats, boxes, present, image_hw):
        """feats (B, L, C, h, w) at stride 4; boxes (B, N, L, 4) -> refined boxes, presence, score
        logits, seq features."""
        b, n, length, _ = boxes.shape
        union = union_boxes(boxes.flatten(0, 1), present.flatten(0, 1)).view(b, n, 1, 4)
        rois = torch.where(present.unsqueeze(-1), boxes, union.expand_as(boxes))  # (B, N, L, 4)
        rois = torch.where((rois[..., 2:] - rois[..., :2]).amin(-1, keepdim=True) > 0, rois,
                           rois + torch.tensor([0.0, 0.0, 1.0, 1.0], device=rois.device))
        pooled = self._pool(feats, rois, image_hw)
        hw = torch.tensor([image_hw[1], image_hw[0], image_hw[1], image_hw[0]], device=rois.device, dtype=rois.dtype)
        tokens = (self.roi_embed(pooled).view(b * n, length, -1) + self.slice_embed
                  + self.box_embed(rois.reshape(b * n, length, 4) / hw)
                  + self.presence_embed(present.reshape(b * n, length).long()))
        memory = self.encoder(tokens)
        out = self.decoder(self.queries.weight.unsqueeze(0).expand(b * n, -1, -1), memory)
        deltas = self.box_head(out[:, :length]).view(b, n, length, 4)
        refined = decode_boxes(rois, deltas)
        presence = self.presence_head(out[:, :length]).view(b, n, length)
        scores = self.class_head(out[:, length]).view(b, n)
        return refined, deltas, rois, presence, scores, out[:, length].view(b, n, -1)

    def _pool(self, feats, rois, image_hw):
        """RoI features (B * N * L, C, roi_size, roi_size) of rois (B, N, L, 4), each from its slice."""
        b, n, length, _ = rois.shape
        image_index = (torch.arange(b, device=rois.device).view(b, 1, 1) * length
                       + torch.arange(length, device=rois.device).view(1, 1, length)).expand(b, n, length)
        rois = torch.cat([image_index.reshape(-1, 1).to(rois.dtype), rois.reshape(-1, 4)], 1)
        scale = feats.shape[-1] / image_hw[1]
        return roi_align(feats.flatten(0, 1), rois, self.cfg.roi_size, spatial_scale=scale,
                         sampling_ratio=ROI_SAMPLING_RATIO, aligned=True)

    def _stage2_losses(self, refined, deltas, rois, presence, scores, boxes, present, valid, targets):
        cls_t = torch.zeros_like(scores)
        l1s, gious, pres = [], [], []
        for b, target in enumerate(targets):
            if len(target) == 0:
                continue
            tb, tp = target.boxes.to(boxes.device), target.present.to(boxes.device)
            iou = match_quality(union_boxes(boxes[b], present[b]), union_boxes(tb, tp), self.cfg)  # (N, T)
            best_iou, best = iou.max(1)
            pos = (best_iou >= self.cfg.positive_iou) & valid[b]
            if not pos.any():
                continue
            cls_t[b, pos] = 1.0
            t_boxes, t_present = tb[best[pos]], tp[best[pos]]
            l1, giou = _box_losses(refined[b][pos], deltas[b][pos], t_boxes, rois[b][pos], t_present)
            l1s.append(l1)
            gious.append(giou)
            pres.append(F.binary_cross_entropy_with_logits(presence[b][pos], t_present.float()))
        zero = refined.sum() * 0.0 + presence.sum() * 0.0
        cls = F.binary_cross_entropy_with_logits(scores[valid], cls_t[valid])
        return {"det_class": cls,
                "det_box_l1": torch.stack(l1s).mean() if l1s else zero,
                "det_box_giou": torch.stack(gious).mean() if gious else zero,
                "det_presence": torch.stack(pres).mean() if pres else zero}

    def forward(self, window, targets=None):
        b, _, length, h, w = window.shape
        if length != self.cfg.window:
            raise ValueError(f"window of {length} slices given to a detector built for {self.cfg.window}")
        feats, objectness, deltas, presence, anchors, rank = self._stage1(window, targets)
        keep = self.cfg.train_proposals if targets is not None else self.cfg.test_proposals
        proposals = self._screen(rank, deltas, presence, anchors, (h, w), keep)
        losses = {}
        if targets is not None:
            losses.update(self._stage1_losses(objectness, deltas, presence, anchors, targets))
            losses["rpn_dense"] = self._dense_loss(feats, anchors, targets)
            proposals = self._with_true_tubes(proposals, targets)
        n = max(1, max(len(p.scores) for p in proposals))
        boxes, present, valid = self._pad(proposals, n)
        refined, d2, rois, pres2, scores, seq = self._stage2(feats, boxes, present, (h, w))
        if targets is not None:
            losses.update(self._stage2_losses(refined, d2, rois, pres2, scores, boxes, present, valid, targets))
        scores = torch.where(valid, scores, torch.full_like(scores, PADDING_SCORE_LOGIT))
        return {"proposals": proposals, "boxes": refined, "presence": pres2, "scores": scores,
                "seq_features": seq, "valid": valid, "losses": losses}
