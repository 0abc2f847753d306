"""U-SAM: Segment Anything with a U-shaped convolutional encoder and skip connections (paper 4.3).

The image encoder is a small U-Net encoder (four poolings: S -> S/16) whose last stage gives the
ViT tokens; SAM's ViT blocks, position embedding and neck (`segment_anything`'s ImageEncoderViT with
its patch embedding replaced) run on that S/16 grid. SAM's prompt encoder embeds the boxes and its
two-way transformer with the mask and IoU tokens runs as in SAM; the mask decoder's 4x upscaling is
replaced by U-Net up-blocks that concatenate the encoder's four skips back to S x S, and the
hypernetwork MLP of the (single) mask token turns the result into mask logits.

Box prompts use two of the prompt encoder's point embeddings (the box corners) and `no_mask_embed`;
the other prompt parts (point labels, not-a-point, mask downscaling) are frozen so that every
trainable parameter gets a gradient each step (DistributedDataParallel needs that).
"""
from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import nn

from cosam_nn.modeling.common import conv_block
from cosam_nn.modeling.config import USAMConfig


class UNetEncoder(nn.Module):
    """(B, 1, S, S) -> skips at S, S/2, S/4, S/8 and tokens (B, S/16, S/16, C_last), channels-last for the ViT."""

    def __init__(self, channels):
        super().__init__()
        c = channels
        self.stages = nn.ModuleList([conv_block(1, c[0])] + [conv_block(c[i], c[i + 1], 2) for i in range(3)])
        self.to_tokens = nn.Conv2d(c[3], c[4], 2, stride=2)

    def forward(self, x):
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips, self.to_tokens(x).permute(0, 2, 3, 1)


class UpBlock(nn.Module):
    """Upsample x2, concatenate the skip, two convolutions; the last block ends linear (no ReLU),
    so that the mask logits (hypernetwork vector . features) can take either sign everywhere."""

    def __init__(self, cin, cskip, cout, last=False):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv = conv_block(cout + cskip, cout)
        if last:
            self.conv.append(nn.Conv2d(cout, cout, 1))

    def forward(self, x, skip):
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class USAMMaskDecoder(MaskDecoder):
    """SAM's mask decoder with one mask token and U-Net up-blocks in place of `output_upscaling`."""

    def __init__(self, cfg: USAMConfig):
        super().__init__(transformer_dim=cfg.prompt_dim,
                         transformer=TwoWayTransformer(depth=cfg.decoder_depth, embedding_dim=cfg.prompt_dim,
                                                       mlp_dim=cfg.decoder_mlp_dim, num_heads=cfg.decoder_heads),
                         num_multimask_outputs=0)
        del self.output_upscaling
        c, d = cfg.unet_channels, cfg.prompt_dim
        out = d // 8  # the hypernetwork MLP's output width
        self.up_blocks = nn.ModuleList([UpBlock(d, c[3], c[3]), UpBlock(c[3], c[2], c[2]),
                                        UpBlock(c[2], c[1], c[1]), UpBlock(c[1], c[0], out, last=True)])

    def forward(self, image_embeddings, skips, image_pe, sparse, dense, boxes_per_image):
        """image_embeddings (B, D, g, g); sparse (K, 2, D); returns masks (K, 1, S, S), iou (K, 1), tokens (K, D)."""
        tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
        repeat = torch.as_tensor(boxes_per_image, device=image_embeddings.device)
        src = torch.repeat_interleave(image_embeddings, repeat, dim=0) + dense
        pos = image_pe.expand(src.shape[0], -1, -1, -1)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens)
        mask_token = hs[:, 1]
        x = src.transpose(1, 2).reshape(b, c, h, w)
        for block, skip in zip(self.up_blocks, reversed(skips)):
            x = block(x, torch.repeat_interleave(skip, repeat, dim=0))
        hyper = self.output_hypernetworks_mlps[0](mask_token)
        masks = torch.einsum("kc,kchw->khw", hyper, x).unsqueeze(1)
        return masks, self.iou_prediction_head(hs[:, 0]), mask_token


class USAM(nn.Module):
    """Box-prompted U-SAM.

    forward(images (B, 1, S, S), boxes: list of B tensors (K_b, 4) in pixel coordinates of S)
    -> mask logits (K, 1, S, S), IoU predictions (K, 1), mask tokens (K, prompt_dim); K = sum K_b,
    in the order of the boxes.
    """

    def __init__(self, cfg: USAMConfig):
        super().__init__()
        self.cfg = cfg
        grid = cfg.grid
        self.unet = UNetEncoder(cfg.unet_channels)
        self.image_encoder = ImageEncoderViT(
            img_size=cfg.img_size, patch_size=16, embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.heads,
            mlp_ratio=4, out_chans=cfg.prompt_dim, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
            use_rel_pos=True, window_size=cfg.window_size, global_attn_indexes=cfg.global_attn_indexes)
        self.image_encoder.patch_embed = nn.Identity()  # the U-Net encoder makes the tokens
        self.prompt_encoder = PromptEncoder(embed_dim=cfg.prompt_dim, image_embedding_size=(grid, grid),
                                            input_image_size=(cfg.img_size, cfg.img_size), mask_in_chans=16)
        self.mask_decoder = USAMMaskDecoder(cfg)
        for module in (self.prompt_encoder.point_embeddings[0], self.prompt_encoder.point_embeddings[1],
                       self.prompt_encoder.not_a_point_embed, self.prompt_encoder.mask_downscaling):
            module.requires_grad_(False)

    def encode(self, images):
        """(B, 1, S, S) -> image embedding (B, D, g, g) and the four skips."""
        s = self.cfg.img_size
        if images.shape[-2:] != (s, s):
            raise ValueError(f"U-SAM expects {s} x {s} inputs, got {tuple(images.shape[-2:])}")
        skips, tokens = self.unet(images)
        return self.image_encoder(tokens), skips

    def forward(self, images, boxes):
        embeddings, skips = self.encode(images)
        counts = [len(b) for b in boxes]
        all_boxes = torch.cat(list(boxes)).to(images.dtype)
        sparse, dense = self.prompt_encoder(points=None, boxes=all_boxes, masks=None)
        return self.mask_decoder(embeddings, skips, self.prompt_encoder.get_dense_pe(), sparse, dense, counts)
