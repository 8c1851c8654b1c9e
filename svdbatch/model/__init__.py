"""The video model: loading a pipeline (the embedded tiny model, a local folder, a hub id, an object-store URL), the
node cache, the model's identity, the UNet override, the sampler, step caching, FLOP counts, provenance and
``svdbatch model stage``. The only package (with render/) that imports torch and diffusers. Imports spec/ and the
foundation."""
