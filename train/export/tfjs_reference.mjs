// Reference outputs of face-api's own networks (its browser bundle, tfjs cpu backend, in Node) for input
// tensors written by train/export/detectors.py, so the converted ONNX files can be checked against them.
// usage: node tfjs_reference.mjs <patched face-api.esm.js> <model dir> ssd|tiny|landmark68 <input.f32> <side> <out.json>
import fs from 'fs';
import util from 'util';

globalThis.__nodeUtil = util; // the browser bundle replaces node's util with an empty stub
const [bundle, modelDir, kind, inFile, side, outFile] = process.argv.slice(2);
const faceapi = await import(bundle);
const tf = faceapi.tf;
await tf.setBackend('cpu');
await tf.ready();

function load(net, name) {
  const manifest = JSON.parse(fs.readFileSync(`${modelDir}/${name}-weights_manifest.json`));
  const buf = fs.readFileSync(`${modelDir}/${manifest[0].paths[0]}`);
  const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
  net.loadFromWeightMap(tf.io.decodeWeights(ab, manifest[0].weights));
}

const n = Number(side);
const raw = fs.readFileSync(inFile);
const x = tf.tensor4d(new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4), [1, n, n, 3]);
const input = new faceapi.NetInput([x]);
let out;
if (kind === 'ssd') {
  const net = new faceapi.SsdMobilenetv1();
  load(net, 'ssd_mobilenetv1_model');
  const r = net.forwardInput(input);
  out = { boxes: r.boxes[0].arraySync(), scores: Array.from(r.scores[0].dataSync()) };
} else if (kind === 'landmark68') {
  const net = new faceapi.FaceLandmark68Net(); // raw network output: 136 values, 0..1 of the square input
  load(net, 'face_landmark_68_model');
  out = { landmarks: Array.from(net.runNet(input).dataSync()) };
} else {
  const net = new faceapi.TinyFaceDetector();
  load(net, 'tiny_face_detector_model');
  out = { grid: net.forwardInput(input, n).arraySync() };
}
out.tfjs = tf.version_core;
fs.writeFileSync(outFile, JSON.stringify(out));
