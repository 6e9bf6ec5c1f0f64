"""The plain peer: FastAPI + uvicorn, one process, the same model through a pipeline."""

import argparse
import os

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline

app = FastAPI()
model = pipeline("sentiment-analysis", model=os.environ["BENCH_SENTIMENT_MODEL"])


class Body(BaseModel):
    text: str


@app.post("/predict")
def predict(body: Body) -> dict:
    # A sync endpoint: FastAPI runs it in its thread pool, off the event loop.
    result = model(body.text)[0]
    return {"label": result["label"], "score": round(result["score"], 4)}


@app.get("/healthz")
def healthz() -> dict:
    return {"ok": True}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    uvicorn.run(app, host="127.0.0.1", port=parser.parse_args().port, log_level="warning")
