from pipelines.embed.pipeline import run

if __name__ == "__main__":
    run()
