// Scores token ids with a stock llama.cpp: node-llama-cpp's prebuilt CPU binary
// (@node-llama-cpp/linux-x64, from the npm registry; nothing is built or
// downloaded at run time).
//
//   node score.mjs MODEL.gguf TOKENS.json [TEXT_FILE]
//
// TOKENS.json: {"tokens": [bos, t1, t2, ...]} (the ids perq scored). Prints one
// JSON object: logprob[i] = log p(tokens[i+1] | tokens[0..i]) from llama.cpp's
// raw logits (log-softmax in double precision here), the GGUF's metadata as
// llama.cpp read it, and, with TEXT_FILE, llama.cpp's own tokenization of the
// text (BOS added as the GGUF says), to compare with perq's tokenizer.
import {readFile} from "node:fs/promises";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [modelPath, tokensPath, textPath] = process.argv.slice(2);
if (!modelPath || !tokensPath) {
    console.error("usage: node score.mjs MODEL.gguf TOKENS.json [TEXT_FILE]");
    process.exit(2);
}

const tokens = JSON.parse(await readFile(tokensPath, "utf8")).tokens;
const llama = await getLlama({
    gpu: false,
    build: "never",
    skipDownload: true,
    usePrebuiltBinaries: true,
    progressLogs: false,
    logLevel: LlamaLogLevel.error,
    maxThreads: 2
});
const model = await llama.loadModel({modelPath, gpuLayers: 0, useMmap: true});
const context = await model.createContext({
    contextSize: Math.max(64, tokens.length),
    batchSize: tokens.length,
    sequences: 1,
    threads: 2,
    flashAttention: false,
    // KV_CACHE=F32: K and V kept in fp32 (llama.cpp's default is F16)
    ...(process.env.KV_CACHE === "F32" ? {experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32"} : {})
});
const sequence = context.getSequence();

const input = tokens.map((t, i) => i + 1 < tokens.length ? [t, {generateNext: {logits: true}}] : t);
const results = await sequence.controlledEvaluate(input);
const logprob = [];
for (let i = 0; i + 1 < tokens.length; i++) {
    const logits = results[i]?.next?.logits;
    if (!logits || logits.size < 2)
        throw new Error(`no logits at position ${i}`);
    let max = -Infinity;
    for (const v of logits.values())
        max = Math.max(max, v);
    let sum = 0;
    for (const v of logits.values())
        sum += Math.exp(v - max);
    const target = logits.get(tokens[i + 1]);
    if (target === undefined)
        throw new Error(`no logit for token ${tokens[i + 1]} at position ${i}`);
    logprob.push(target - max - Math.log(sum));
}

const out = {
    logprob,
    metadata: {
        architecture: model.fileInfo.metadata.general.architecture,
        name: model.fileInfo.metadata.general.name,
        tokenizer_model: model.fileInfo.metadata.tokenizer?.ggml?.model,
        context_length: model.trainContextSize,
        n_tensors: model.fileInfo.tensorInfo?.length
    },
    llama_cpp: {
        node_llama_cpp: JSON.parse(await readFile(new URL("./node_modules/node-llama-cpp/package.json", import.meta.url),
            "utf8")).version,
        release: llama.llamaCppRelease?.release,
        gpu: llama.gpu,
        build: llama.buildType
    }
};
if (textPath) {
    // as llama-perplexity reads a file: one trailing newline dropped
    let text = await readFile(textPath, "utf8");
    if (text.endsWith("\n"))
        text = text.slice(0, -1);
    const ids = model.tokenize(text);
    const bos = model.tokens.bos;
    out.text_tokens = model.fileInfo.metadata.tokenizer?.ggml?.add_bos_token && bos != null ? [bos, ...ids] : ids;
}
console.log(JSON.stringify(out));
await context.dispose();
await model.dispose();
await llama.dispose();
